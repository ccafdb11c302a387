"""Newton's method on the Rosenbrock function, with pg.grad and pg.hessian.

f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 has its minimum 0 at (1, 1), at the
end of a long curved valley where gradient descent crawls.  Newton steps
solve H d = -g with the exact Hessian: from (-1.2, 1) they reach the minimum
to machine precision in a handful of steps.  The gradient is built once as
a graph; pg.hessian differentiates it again at each step (the Hessian graph
is shared, so the tape stops growing after the first step).

    python examples/newton.py [--quick] [--out DIR]
"""
import argparse
import pathlib

import numpy as np

import pyrograd as pg

START = (-1.2, 1.0)
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "out" / "newton"


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def newton(start=START, tol=1e-10, max_steps=30, verbose=False):
    """Newton steps from start until the gradient norm is below tol.

    Returns a list of (point, f, gradient norm) for the start and every step.
    Raises RuntimeError if max_steps are not enough."""
    tape = pg.Tape()
    x, y = tape.term("x", start[0]), tape.term("y", start[1])
    f = rosenbrock(x, y)
    grad = pg.grad(f, [x, y])
    path = []
    for step in range(max_steps + 1):
        point = tape.values([x, y])
        g = tape.values(grad)
        norm = float(np.linalg.norm(g))
        path.append((point, f.value, norm))
        if verbose:
            print(f"step {step:2d}  x = {point[0]: .12f}  y = {point[1]: .12f}  "
                  f"f = {f.value:.3e}  |grad| = {norm:.3e}")
        if norm < tol:
            return path
        if step == max_steps:
            break
        hessian = pg.hessian(f, [x, y])
        tape.set_values([x, y], point - np.linalg.solve(hessian, g))
    raise RuntimeError(f"Newton did not converge in {max_steps} steps (|grad| = {norm:.3e})")


def draw(path, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-4, 3, 300))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contour(xs, ys, np.log10(rosenbrock(xs, ys) + 1e-3), levels=30, cmap="viridis")
    points = np.array([p for p, _, _ in path])
    ax.plot(points[:, 0], points[:, 1], "o-", color="crimson", label="Newton steps")
    ax.plot([1], [1], "k*", markersize=12, label="minimum (1, 1)")
    ax.set(xlabel="x", ylabel="y", title=f"Rosenbrock: {len(path) - 1} Newton steps from (-1.2, 1)")
    ax.legend(loc="lower left")
    file = out / "newton.png"
    fig.savefig(file, dpi=100)
    plt.close(fig)
    return file


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no picture, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                        help="folder for the picture of the path (default: examples/out/newton)")
    args = parser.parse_args(argv)
    path = newton(verbose=True)
    point = path[-1][0]
    print(f"converged to ({point[0]:.15f}, {point[1]:.15f}) in {len(path) - 1} Newton steps")
    if args.quick:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("(no picture of the path: matplotlib is not installed; pip install 'pyrograd[examples]')")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"picture: {draw(path, args.out)}")


if __name__ == "__main__":
    main()
