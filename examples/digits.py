"""rust-autograd's softmax regression, with Adam, on scikit-learn's 8x8 digits.

1,797 images of handwritten digits, 64 pixels each (scaled to [0, 1]); a
fifth held out for testing.  The model is one linear layer of 10 units
(Glorot init, as rust-autograd), one logit per digit, trained on the softmax
cross-entropy in batches of 50 with Adam.  Test accuracy ends above 0.95;
the time per epoch is printed.

    python examples/digits.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import sys
import time

import numpy as np

import pyrograd as pg

EPOCHS = 10


def load(seed=0):
    """(X_train, y_train, X_test, y_test), or exits with a message without scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("digits.py needs the digit images that scikit-learn ships: "
                 "pip install scikit-learn (or pip install 'pyrograd[examples]')")
    digits = load_digits()
    X, y = digits.data / 16.0, digits.target.astype(np.float64)
    order = np.random.default_rng(seed).permutation(len(X))
    test, train = order[: len(X) // 5], order[len(X) // 5:]
    return X[train], y[train], X[test], y[test]


def train(X, y, epochs=EPOCHS, seed=0, progress=True):
    """Returns (trainer, losses, seconds per epoch)."""
    model = pg.nn.Layer(64, 10, nonlin=False, init="glorot", seed=seed)
    adam = pg.optim.Adam(model.parameters(), lr=0.01)
    trainer = pg.nn.Trainer(model, adam, pg.losses.softmax_cross_entropy)
    start = time.perf_counter()
    losses = trainer.train(X, y, epochs, batch_size=50, seed=seed, progress=progress)
    return trainer, losses, (time.perf_counter() - start) / epochs


def accuracy(trainer, X, y):
    return np.mean(trainer.predict(X).argmax(axis=1) == y)


def draw(trainer, losses, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Each digit's 64 weights, drawn as the 8x8 picture they score.
    weights = trainer.model.tape.values(trainer.model.parameters()).reshape(10, 65)[:, :64]
    fig, axes = plt.subplots(1, 11, figsize=(15, 1.8), gridspec_kw={"width_ratios": [1] * 10 + [2.5]})
    limit = np.abs(weights).max()  # white is 0
    for digit, ax in enumerate(axes[:10]):
        ax.imshow(weights[digit].reshape(8, 8), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set(title=str(digit), xticks=[], yticks=[])
    axes[10].plot(np.arange(1, len(losses) + 1), losses, marker="o")
    axes[10].set(xlabel="epoch", title="loss")
    fig.tight_layout()
    fig.savefig(out / "digits.png", dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 10, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("pyrograd-examples"),
                        help="folder for the pictures (default: %(default)s)")
    args = parser.parse_args(argv)
    X_train, y_train, X_test, y_test = load()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("digits.py draws with matplotlib: pip install 'pyrograd[examples]'")

    trainer, losses, seconds = train(X_train, y_train, 2 if args.quick else EPOCHS)
    for epoch, loss in enumerate(losses, 1):
        print(f"epoch {epoch:2d}  loss {loss:.4f}")
    print(f"test accuracy {accuracy(trainer, X_test, y_test):.3f} on {len(X_test)} images "
          f"({len(X_train)} for training)")
    print(f"time per epoch {seconds * 1e3:.1f} ms")
    args.out.mkdir(parents=True, exist_ok=True)
    draw(trainer, losses, args.out)
    print(f"picture in {args.out}/: digits.png")


if __name__ == "__main__":
    main()
