"""rustograd's sine.png: sin(a) over a, with d/da by derive and by backprop.

The graph is built once, on a leaf `a`.  The value curve is one eval_batch
over every a; at each a, the forward sweep (`y.derive(a)`) and the reverse
sweep (`y.backprop()`, then `a.grad`) each give dy/da, which is cos(a): the
script prints the largest difference of each from it, and the test checks it.

    python examples/sine.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import sys

import numpy as np

import pyrograd as pg


def sine(tape):
    """rustograd's sine.rs: a leaf `a` and sin(a); returns (a, y)."""
    a = tape.term("a")
    return a, pg.sin(a)


def sine_derivative(xs):
    """The closed form the two sweeps must agree with."""
    return np.cos(xs)


def curves(model, xs):
    """The model's output at each of xs, and dy/da there by derive and by
    backprop: an array of shape (len(xs), 3).  `model(tape)` builds the
    graph and returns (a, y)."""
    tape = pg.Tape()
    a, y = model(tape)
    xs = np.ascontiguousarray(xs, dtype=np.float64)
    values = tape.eval_batch(y, [a], xs.reshape(-1, 1))  # every a in one C call
    forward, reverse = np.empty_like(xs), np.empty_like(xs)
    for i, x in enumerate(xs):  # one derivative per x: one sweep each way
        a.set(x)
        forward[i] = y.derive(a)
        y.backprop()
        reverse[i] = a.grad
    return np.column_stack([values, forward, reverse])


def report(xs, table, derivative):
    """Prints a few rows, as rustograd does, and how far each sweep is from the closed form."""
    for i in (np.linspace(0.1, 0.9, 5) * (len(xs) - 1)).astype(int):
        print(f"a = {xs[i]:+.4f}  y = {table[i, 0]:+.6f}  derive = {table[i, 1]:+.6f}  "
              f"backprop = {table[i, 2]:+.6f}")
    exact = derivative(xs)
    print(f"largest |derive - closed form| {np.abs(table[:, 1] - exact).max():.1e}, "
          f"|backprop - closed form| {np.abs(table[:, 2] - exact).max():.1e} over {len(xs)} points")


def draw(xs, table, expression, path):
    """The value and both derivatives on one plot.  The two derivatives
    coincide, so derive is a wide pale line and backprop a thin dashed one on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    ax.plot(xs, table[:, 0], color="tab:blue", label=f"y = {expression}")
    ax.plot(xs, table[:, 1], color="tab:orange", linewidth=5, alpha=0.4,
            label="dy/da by derive (forward mode)")
    ax.plot(xs, table[:, 2], color="tab:red", linestyle="--", linewidth=1.5,
            label="dy/da by backprop (reverse mode)")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set(xlabel="a", title=f"{expression} and its derivative, forward and reverse")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(script, doc, model, expression, derivative, half_width, argv=None):
    """The main of sine.py and mixed_sine.py (`doc` is the script's
    docstring): parse, compute, print, draw."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="41 points instead of 401, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("pyrograd-examples"),
                        help="folder for the picture (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit(f"{script}.py draws with matplotlib: pip install 'pyrograd[examples]'")

    xs = np.linspace(-half_width, half_width, 41 if args.quick else 401)
    table = curves(model, xs)
    report(xs, table, derivative)
    args.out.mkdir(parents=True, exist_ok=True)
    draw(xs, table, expression, args.out / f"{script}.png")
    print(f"picture in {args.out}/: {script}.png")


def main(argv=None):
    run("sine", __doc__, sine, "sin(a)", sine_derivative, np.pi, argv)


if __name__ == "__main__":
    main()
