"""RustGrad's 3-D parity problem: +1 when an odd number of the three inputs
are positive, -1 otherwise (XOR in three dimensions).

A 3-8-8-1 ReLU MLP built with MlpBuilder (Kaiming init), mean squared error,
plain gradient descent with rate 0.01 on all 8 corners, 10,000 epochs: every
prediction ends within 0.05 of its target.

    python examples/parity3d.py [--quick] [--out DIR]
"""
import argparse
import itertools
import pathlib
import sys
import time

import numpy as np

import pyrograd as pg
from pyrograd.nn import Activation

EPOCHS = 10_000


def corners():
    """The 8 corners of the cube [-1, 1]^3 and their parities."""
    X = np.array(list(itertools.product([-1.0, 1.0], repeat=3)))
    y = np.where((X > 0).sum(axis=1) % 2 == 1, 1.0, -1.0)
    return X, y


def train(epochs=EPOCHS, seed=0, progress=True):
    """Returns (trainer, X, y, losses, seconds)."""
    X, y = corners()
    model = (pg.nn.MlpBuilder(3, seed=seed)
             .add_layer(8, Activation.RELU)
             .add_layer(8, Activation.RELU)
             .add_layer(1, Activation.LINEAR)
             .build())
    trainer = pg.nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=0.01), pg.losses.mse)
    start = time.perf_counter()
    losses = trainer.train(X, y, epochs, progress=progress)
    return trainer, X, y, losses, time.perf_counter() - start


def draw(predictions, y, losses, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(losses)
    left.set(xlabel="epoch", ylabel="mean squared error", yscale="log", title="Training loss")
    index = np.arange(len(y))
    right.bar(index - 0.2, y, 0.4, label="target")
    right.bar(index + 0.2, predictions, 0.4, label="prediction")
    right.set(xticks=index, xticklabels=[f"{i:03b}" for i in index], xlabel="corner (1 = positive input)",
              ylim=(-1.2, 1.6), title="Parity of the 8 corners")
    right.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(out / "parity3d.png", dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 epochs instead of 10,000, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("pyrograd-examples"),
                        help="folder for the pictures (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("parity3d.py draws with matplotlib: pip install 'pyrograd[examples]'")

    trainer, X, y, losses, seconds = train(1_000 if args.quick else EPOCHS)
    predictions = trainer.predict(X)
    for x, target, prediction in zip(X, y, predictions):
        print(f"{x}  target {target:+.0f}  prediction {prediction:+.4f}")
    print(f"largest error {np.abs(predictions - y).max():.2e} after {len(losses)} epochs "
          f"({seconds * 1e3:.0f} ms, {seconds / len(losses) * 1e6:.1f} us per epoch)")
    args.out.mkdir(parents=True, exist_ok=True)
    draw(predictions, y, losses, args.out)
    print(f"picture in {args.out}/: parity3d.png")


if __name__ == "__main__":
    main()
