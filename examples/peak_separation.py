"""rustograd's peak separation: two Gaussians recovered from their sum, as a GIF.

The data is 0.75 * exp(-(x - 0.8)^2 / 0.35) + 0.5 * exp(-(x + 0.3)^2 / 0.5)
sampled at x = -4.0, -3.9, ..., 3.9 (80 samples); the model is
s0 * exp(-(x - mu0)^2 / sigma0^2) + s1 * exp(-(x - mu1)^2 / sigma1^2), from
rustograd's start (mu0 = -1, mu1 = 1, every sigma and s 1).  3,000 epochs of
gradient descent at rate 0.01 on the squared error summed over the samples
(one grad_batch and one SGD step an epoch) recover each peak: 0.5 at -0.3
and 0.75 at 0.8, every parameter within 0.001.  Draws the two peaks and
their sum converging, as a GIF.

    python examples/peak_separation.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import sys

import numpy as np

import pyrograd as pg

EPOCHS = 3000
RATE = 0.01
START = [-1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # mu0, sigma0, s0, mu1, sigma1, s1
TRUTH = [-0.3, np.sqrt(0.5), 0.5, 0.8, np.sqrt(0.35), 0.75]


def truth(x):
    return 0.75 * np.exp(-((x - 0.8) ** 2) / 0.35) + 0.5 * np.exp(-((x + 0.3) ** 2) / 0.5)


def samples():
    xs = np.arange(-40, 40) / 10
    return np.column_stack([xs, truth(xs)])


def model():
    """(tape, x, y, the six parameters, the two peaks, loss), rustograd's model."""
    tape = pg.Tape()
    x = tape.term("x")

    def gaussian(i, mu):
        mu, sigma, scale = tape.term(f"mu{i}", mu), tape.term(f"sigma{i}", 1.0), tape.term(f"scale{i}", 1.0)
        x_mu = x - mu
        return [mu, sigma, scale], scale * pg.exp(-(x_mu * x_mu) / sigma / sigma)

    params0, peak0 = gaussian(0, START[0])
    params1, peak1 = gaussian(1, START[3])
    y = tape.term("y")
    diff = peak0 + peak1 - y
    return tape, x, y, params0 + params1, (peak0, peak1), diff * diff


def fit(epochs=EPOCHS):
    """Fits the model; returns (the model, the parameters before each epoch
    and after the last: shape (epochs + 1, 6), the summed loss of each epoch)."""
    tape, x, y, params, peaks, loss = fitted = model()
    data = samples()
    sgd = pg.optim.SGD(params, lr=RATE)
    history, losses = [tape.values(params)], []
    for _ in range(epochs):
        total, _ = tape.grad_batch(loss, [x, y], data, params)
        sgd.step()
        losses.append(total)
        history.append(tape.values(params))
    return fitted, np.array(history), np.array(losses)


def draw(fitted, history, out, frames):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tape, x, y, params, peaks, loss = fitted
    data = samples()
    xs = np.linspace(-4, 4, 200)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    images = []
    for epoch in frames:
        tape.set_values(params, history[epoch])
        # Both peaks at 200 points in one eval_batch.
        peak0, peak1 = tape.eval_batch(list(peaks), [x], xs.reshape(-1, 1)).T
        ax.clear()
        ax.plot(data[:, 0], data[:, 1], "o", ms=3, color="tab:gray", label="samples")
        ax.plot(xs, peak0, "--", color="tab:blue", label="peak 0")
        ax.plot(xs, peak1, "--", color="tab:green", label="peak 1")
        ax.plot(xs, peak0 + peak1, color="tab:red", lw=2, label="sum")
        ax.set(ylim=(-0.05, 1.25), xlabel="x", title=f"epoch {epoch}")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        images.append(pg.pictures.figure_image(fig))
    plt.close(fig)
    pg.pictures.save_gif(images, out / "peak_separation.gif", fps=8, hold_last=2.0)


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
        sys.exit("peak_separation.py draws with matplotlib and Pillow: pip install 'pyrograd[viz]'")

    fitted, history, losses = fit()
    names = ["mu0", "sigma0", "s0", "mu1", "sigma1", "s1"]
    for epoch in (0, 10, 100, 1000, EPOCHS):
        values = "  ".join(f"{name} {value:7.4f}" for name, value in zip(names, history[epoch]))
        print(f"epoch {epoch:4d}  {values}")
    print("truth       " + "  ".join(f"{name} {value:7.4f}" for name, value in zip(names, TRUTH)))
    print(f"largest error {np.abs(history[-1] - TRUTH).max():.2e}, final loss {losses[-1]:.2e}")
    args.out.mkdir(parents=True, exist_ok=True)
    # Frames at epochs spaced evenly on a log scale: the peaks move most at first.
    frames = np.unique(np.geomspace(1, EPOCHS + 1, 6 if args.quick else 22).round().astype(int) - 1)
    draw(fitted, history, args.out, frames)
    print(f"pictures in {args.out}/: peak_separation.gif")


if __name__ == "__main__":
    main()
