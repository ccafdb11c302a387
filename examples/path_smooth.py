"""rustograd's path smoothing: a path of 7 points pulled tight around a bump.

The path starts at (0, 0), (0.5, 0), (1, 0), (1.5, 0.5), (2, 1), (2, 1.5),
(2, 2).  The loss is the sum of the squared lengths of its 6 segments (a
tight, evenly spaced path) plus 1.25 times a Gaussian potential
exp(-|p - (1, 1)|^2 / 4) summed over the points (a bump the path avoids).
1,000 steps of gradient descent at rate 0.1 move the 5 inner points, the
ends stay put: the path straightens towards the diagonal through (1, 1),
and the bump holds its middle point 0.50 away from it.  Draws the path
moving over the potential, as a GIF.

    python examples/path_smooth.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import sys

import numpy as np

import pyrograd as pg

START = np.array([[0, 0], [0.5, 0], [1, 0], [1.5, 0.5], [2, 1], [2, 1.5], [2, 2]], dtype=np.float64)
BUMP = (1.0, 1.0)  # the center of the potential
BUMP_WIDTH = 4.0  # sigma^2
BUMP_SCALE = 1.25
STEPS = 1000
RATE = 0.1


def model(bump_scale=BUMP_SCALE):
    """(tape, the points as (x, y) leaves, loss)."""
    tape = pg.Tape()
    points = [(tape.term(f"x{i}", x), tape.term(f"y{i}", y)) for i, (x, y) in enumerate(START)]
    length = sum((x1 - x0) ** 2 + (y1 - y0) ** 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))
    potential = sum(pg.exp(-((x - BUMP[0]) ** 2 + (y - BUMP[1]) ** 2) / BUMP_WIDTH) for x, y in points)
    return tape, points, length + bump_scale * potential


def smooth(steps=STEPS, bump_scale=BUMP_SCALE):
    """Gradient descent on the inner points; returns (the model, the points
    before each step and after the last: shape (steps + 1, 7, 2), the loss
    before each step)."""
    tape, points, loss = fitted = model(bump_scale)
    leaves = [leaf for point in points for leaf in point]
    inner = [leaf for point in points[1:-1] for leaf in point]
    sgd = pg.optim.SGD(inner, lr=RATE)
    history, losses = [tape.values(leaves).reshape(-1, 2)], []
    for _ in range(steps):
        loss.backprop()
        losses.append(loss.value)
        sgd.step()
        history.append(tape.values(leaves).reshape(-1, 2))
    return fitted, np.array(history), np.array(losses)


def draw(history, out, frames):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-0.5, 2.5, 120)
    gx, gy = np.meshgrid(grid, grid)
    potential = BUMP_SCALE * np.exp(-((gx - BUMP[0]) ** 2 + (gy - BUMP[1]) ** 2) / BUMP_WIDTH)
    fig, ax = plt.subplots(figsize=(4, 4))
    images = []
    for step in frames:
        ax.clear()
        ax.contourf(gx, gy, potential, levels=12, cmap="Blues")
        ax.plot(*BUMP, "x", color="navy", ms=8)
        ax.plot(START[:, 0], START[:, 1], "o--", color="gray", ms=4, label="start")
        ax.plot(history[step, :, 0], history[step, :, 1], "o-", color="tab:red", lw=2, label="path")
        ax.set(xlim=(-0.5, 2.5), ylim=(-0.5, 2.5), aspect="equal", title=f"step {step}")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        images.append(pg.pictures.figure_image(fig))
    plt.close(fig)
    pg.pictures.save_gif(images, out / "path_smooth.gif", fps=8, hold_last=2.0)


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
        sys.exit("path_smooth.py draws with matplotlib and Pillow: pip install 'pyrograd[viz]'")

    (tape, points, loss), history, losses = smooth()
    for step in (0, 1, 10, 100, STEPS - 1):
        print(f"step {step:4d}  loss {losses[step]:.6f}")
    print("smoothed path: " + ", ".join(f"({x:.3f}, {y:.3f})" for x, y in history[-1]))
    middle = history[-1, len(START) // 2]
    print(f"the middle point is {np.hypot(*(middle - BUMP)):.2f} from the bump at {BUMP}")
    args.out.mkdir(parents=True, exist_ok=True)
    # Frames at steps spaced evenly on a log scale: the path moves most at first.
    frames = np.unique(np.geomspace(1, STEPS + 1, 6 if args.quick else 24).round().astype(int) - 1)
    draw(history, args.out, frames)
    print(f"pictures in {args.out}/: path_smooth.gif")


if __name__ == "__main__":
    main()
