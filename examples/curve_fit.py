"""rustograd's Gaussian curve fit, with a GIF of the curve converging.

Fits s * exp(-(x - mu)^2 / sigma^2) to 0.75 * exp(-(x - 1.2)^2 / 0.35)
sampled at x = -4.0, -3.9, ..., 3.9 (80 samples), from mu = 0, sigma = 1,
s = 1, by 100 epochs of gradient descent at rate 0.01 on the squared error
summed over the samples: one grad_batch and one SGD step an epoch.  It
reaches rustograd's mu = 1.2000, sigma = 0.59576, s = 0.74520.  Draws the
curve at each epoch as a GIF, and the model's graph with values and grads
(at x = 1, from the start).

    python examples/curve_fit.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import shutil
import sys

import numpy as np

import pyrograd as pg

EPOCHS = 100
RATE = 0.01


def samples():
    """The 80 (x, y) rows the curve is fitted to."""
    xs = np.arange(-40, 40) / 10
    return np.column_stack([xs, 0.75 * np.exp(-((xs - 1.2) ** 2) / 0.35)])


def model():
    """rustograd's tape_curve_fit model: (tape, x, y, [mu, sigma, scale], curve, loss)."""
    tape = pg.Tape()
    x = tape.term("x")
    mu, sigma, scale = tape.term("mu", 0.0), tape.term("sigma", 1.0), tape.term("scale", 1.0)
    x_mu = x - mu
    curve = scale * pg.exp(-(x_mu * x_mu) / sigma / sigma)
    y = tape.term("y")
    diff = curve - y
    return tape, x, y, [mu, sigma, scale], curve, diff * diff


def fit(epochs=EPOCHS):
    """Fits the model; returns (the model, parameters before each epoch and
    after the last: shape (epochs + 1, 3), the summed loss of each epoch)."""
    tape, x, y, params, curve, loss = fitted = model()
    data = samples()
    sgd = pg.optim.SGD(params, lr=RATE)
    history, losses = [tape.values(params)], []
    for _ in range(epochs):
        total, _ = tape.grad_batch(loss, [x, y], data, params)
        sgd.step()
        losses.append(total)
        history.append(tape.values(params))
    return fitted, np.array(history), np.array(losses)


def draw(fitted, history, losses, out, frames):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tape, x, y, params, curve, loss = fitted
    data = samples()
    xs = np.linspace(-4, 4, 200)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    images = []
    for epoch in frames:
        tape.set_values(params, history[epoch])
        ax.clear()
        ax.plot(data[:, 0], data[:, 1], "o", ms=3, color="tab:gray", label="samples")
        # The curve at 200 points: one eval_batch of the model's own tape.
        ax.plot(xs, tape.eval_batch(curve, [x], xs.reshape(-1, 1)), color="tab:red", lw=2, label="model")
        mu, sigma, scale = history[epoch]
        ax.set(ylim=(-0.05, 1.05), xlabel="x",
               title=f"epoch {epoch}: mu={mu:.3f}, sigma={sigma:.3f}, s={scale:.3f}")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        images.append(pg.pictures.figure_image(fig))
    plt.close(fig)
    pg.pictures.save_gif(images, out / "curve_fit.gif", fps=8, hold_last=2.0)

    if shutil.which("dot") is None:
        print("no curve_fit_graph.svg: graphviz's dot is not installed (apt-get install graphviz)")
        return
    # The graph at the sample x = 1, with the starting parameters.
    tape.set_values(params, history[0])
    tape.set_values([x, y], data[50])
    loss.backprop()
    pg.render(loss, out / "curve_fit_graph.svg", show_values=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("pyrograd-examples"),
                        help="folder for the pictures (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        sys.exit("curve_fit.py draws with matplotlib and Pillow: pip install 'pyrograd[viz]'")

    fitted, history, losses = fit()
    for epoch in (0, 1, 10, 50, EPOCHS):
        mu, sigma, scale = history[epoch]
        loss = f"  loss {losses[epoch]:.6f}" if epoch < EPOCHS else ""
        print(f"epoch {epoch:3d}  mu {mu:.4f}  sigma {sigma:.5f}  s {scale:.5f}{loss}")
    print("rustograd after one fit: mu 1.2000, sigma 0.59576, s 0.74520")
    args.out.mkdir(parents=True, exist_ok=True)
    # Frames at epochs spaced evenly on a log scale: the curve moves most at first.
    frames = np.unique(np.geomspace(1, EPOCHS + 1, 6 if args.quick else 30).round().astype(int) - 1)
    draw(fitted, history, losses, args.out, frames)
    print(f"pictures in {args.out}/: curve_fit.gif, curve_fit_graph.svg")


if __name__ == "__main__":
    main()
