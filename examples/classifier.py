"""rustograd's classifier: softmax regression with L2 on two Gaussian blobs, and its decision regions.

As rustograd's tape_classifier.rs, the model is linear: one logit per class,
w . (x, y) + offset (a pg.nn.Layer without activation).  It is trained on
the softmax cross-entropy plus 0.01 times the sum of squared parameters (the
blobs are separable: without the L2 term the weights would grow for ever),
with Adam, one step per epoch on all the points.  The 50 points per class
are drawn here, with a seeded numpy generator, around rustograd's samples.
Training accuracy ends at 0.95 or more; the decision regions are the argmax
of the logits over a grid, scored with one eval_batch.

    python examples/classifier.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import sys

import numpy as np

import pyrograd as pg

# The middles of rustograd's hand-written samples: class 0 up left, class 1
# down right and, in tape_3classifier.rs, class 2 up between them.
CENTERS = np.array([[-2.5, 1.5], [3.0, -1.6], [0.0, 3.5]])
SPREAD = 0.7
EPOCHS = 300
WEIGHT_DECAY = 0.01


def make_blobs(classes, per_class=50, seed=0):
    """per_class points from a round Gaussian around each of the first
    `classes` centers: X of shape (classes * per_class, 2) and y, the class
    indices 0..classes-1 as floats."""
    if not 2 <= classes <= len(CENTERS):
        raise ValueError(f"classes must be 2..{len(CENTERS)}, not {classes!r}")
    rng = np.random.default_rng(seed)
    X = np.vstack([center + SPREAD * rng.standard_normal((per_class, 2)) for center in CENTERS[:classes]])
    y = np.repeat(np.arange(classes, dtype=np.float64), per_class)
    return X, y


def train(classes=2, epochs=EPOCHS, weight_decay=WEIGHT_DECAY, seed=0):
    """Trains softmax regression on the blobs; returns (trainer, X, y, losses)."""
    X, y = make_blobs(classes, seed=seed)
    model = pg.nn.Layer(2, classes, nonlin=False, init="glorot", seed=seed)
    adam = pg.optim.Adam(model.parameters(), lr=0.05)
    trainer = pg.nn.Trainer(model, adam, pg.losses.softmax_cross_entropy,
                            regularization=lambda params: weight_decay * pg.losses.l2(params))
    losses = trainer.train(X, y, epochs=epochs, progress=False)
    return trainer, X, y, losses


def accuracy(trainer, X, y):
    return np.mean(trainer.predict(X).argmax(axis=1) == y)


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def regions(trainer, X, grid_size):
    """The grid around the points, and the softmax probabilities at each of
    its points, of shape (grid_size, grid_size, classes): the whole grid is
    one trainer.predict, so one eval_batch."""
    low, high = X.min(axis=0) - 1.5, X.max(axis=0) + 1.5
    xx, yy = np.meshgrid(np.linspace(low[0], high[0], grid_size), np.linspace(low[1], high[1], grid_size))
    logits = trainer.predict(np.column_stack([xx.ravel(), yy.ravel()]))
    return xx, yy, softmax(logits).reshape(grid_size, grid_size, -1)


def draw(trainer, X, y, losses, path, grid_size):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = trainer.model.nout
    colors = plt.cm.tab10(np.arange(classes))[:, :3]
    xx, yy, probabilities = regions(trainer, X, grid_size)
    # Each point of the grid in its class's color, paler where the model is less sure.
    winner, confidence = probabilities.argmax(axis=2), probabilities.max(axis=2)
    strength = 0.15 + 0.45 * (confidence - 1 / classes) / (1 - 1 / classes)
    picture = 1 - strength[..., None] * (1 - colors[winner])

    fig, (ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [1.3, 1]})
    ax.imshow(picture, origin="lower", aspect="auto", interpolation="nearest",
              extent=(xx[0, 0], xx[0, -1], yy[0, 0], yy[-1, 0]))
    ax.contour(xx, yy, winner, levels=np.arange(classes - 1) + 0.5, colors="k", linewidths=0.8)
    for k in range(classes):
        ax.scatter(*X[y == k].T, color=colors[k], edgecolors="k", s=30, label=f"class {k}")
    ax.set(xlabel="x", ylabel="y",
           title=f"{classes} classes: decision regions, {accuracy(trainer, X, y):.0%} train accuracy")
    ax.legend(loc="upper right", fontsize="small")

    loss_ax.plot(np.arange(1, len(losses) + 1), losses)
    loss_ax.set(xlabel="epoch (one Adam step on all the points)", ylabel="loss", yscale="log",
                title=f"softmax cross-entropy + {WEIGHT_DECAY:g} L2")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None, classes=2, script="classifier", doc=__doc__):
    """The main of classifier.py and of classifier3.py (classes=3)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a coarse grid and fewer epochs, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("pyrograd-examples"),
                        help="folder for the picture (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit(f"{script}.py draws with matplotlib: pip install 'pyrograd[examples]'")

    trainer, X, y, losses = train(classes, epochs=100 if args.quick else EPOCHS)
    for epoch in range(0, len(losses), len(losses) // 5):
        print(f"epoch {epoch + 1:3d}  loss {losses[epoch]:.4f}")
    print(f"epoch {len(losses):3d}  loss {losses[-1]:.4f}")
    weights = trainer.model.tape.values(trainer.model.parameters())
    print(f"train accuracy {accuracy(trainer, X, y):.3f} on {len(X)} points of {classes} classes")
    print(f"parameters (w_x, w_y, offset per class): {np.array2string(weights, precision=3)}")
    args.out.mkdir(parents=True, exist_ok=True)
    draw(trainer, X, y, losses, args.out / f"{script}.png", grid_size=60 if args.quick else 300)
    print(f"picture in {args.out}/: {script}.png")


if __name__ == "__main__":
    main()
