"""micrograd's demo: a 2-16-16-1 MLP learns to separate two moons.

100 points of two interleaved half circles (noise 0.1), labels -1 and +1;
the SVM max-margin loss plus 1e-4 times the sum of squared parameters; 100
steps of SGD on all the points with a learning rate falling from 1.0 to 0.1.
It reaches 100% training accuracy, and draws the decision boundary.

    python examples/moons.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import sys
import time

import numpy as np

import pyrograd as pg

STEPS = 100


def make_moons(n=100, noise=0.1, seed=1337):
    """scikit-learn's make_moons: an upper half circle (label -1) and a
    lower one shifted right and down into it (label +1), plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    upper, lower = np.linspace(0, np.pi, n // 2), np.linspace(0, np.pi, n - n // 2)
    X = np.vstack([np.column_stack([np.cos(upper), np.sin(upper)]),
                   np.column_stack([1 - np.cos(lower), 0.5 - np.sin(lower)])])
    y = np.hstack([-np.ones(n // 2), np.ones(n - n // 2)])
    return X + rng.normal(scale=noise, size=X.shape), y


def train(seed=1337):
    """Trains micrograd's model on the moons; returns (trainer, X, y, losses, seconds)."""
    X, y = make_moons(seed=seed)
    model = pg.nn.MLP(2, [16, 16, 1], seed=seed)
    sgd = pg.optim.SGD(model.parameters(), lr=lambda k: 1.0 - 0.9 * k / STEPS)
    trainer = pg.nn.Trainer(model, sgd, pg.losses.hinge,
                            regularization=lambda params: 1e-4 * pg.losses.l2(params))
    start = time.perf_counter()
    losses = trainer.train(X, y, epochs=STEPS, progress=False)
    return trainer, X, y, losses, time.perf_counter() - start


def accuracy(trainer, X, y):
    return np.mean((trainer.predict(X) > 0) == (y > 0))


def draw(trainer, X, y, losses, out, grid_size):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The whole grid of scores in one eval_batch.
    xx, yy = np.meshgrid(np.linspace(X[:, 0].min() - 1, X[:, 0].max() + 1, grid_size),
                         np.linspace(X[:, 1].min() - 1, X[:, 1].max() + 1, grid_size))
    scores = trainer.predict(np.column_stack([xx.ravel(), yy.ravel()])).reshape(xx.shape)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(xx, yy, scores > 0, cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=40, cmap=plt.cm.Spectral, edgecolors="k")
    ax.set_title(f"MLP 2-16-16-1 decision boundary, {accuracy(trainer, X, y):.0%} train accuracy")
    fig.savefig(out / "moons_boundary.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(losses)
    ax.set(xlabel="step", ylabel="hinge loss + 1e-4 L2", yscale="log", title="Training loss")
    fig.savefig(out / "moons_loss.png", dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a coarse picture, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("pyrograd-examples"),
                        help="folder for the pictures (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("moons.py draws with matplotlib: pip install 'pyrograd[examples]'")

    trainer, X, y, losses, seconds = train()
    for k in range(0, STEPS, 10):
        print(f"step {k:3d}  loss {losses[k]:.6f}")
    print(f"step {STEPS - 1:3d}  loss {losses[-1]:.6f}")
    print(f"train accuracy {accuracy(trainer, X, y):.0%}")
    print(f"{seconds / STEPS * 1e6:.0f} us per step (grad_batch over {len(X)} points, L2, SGD)")
    args.out.mkdir(parents=True, exist_ok=True)
    draw(trainer, X, y, losses, args.out, grid_size=60 if args.quick else 250)
    print(f"pictures in {args.out}/: moons_boundary.png, moons_loss.png")


if __name__ == "__main__":
    main()
