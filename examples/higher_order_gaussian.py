"""rustograd's picture: exp(-x^2) and its derivatives of orders 1 to 3.

Each derivative is a graph on the same tape, built by applying pg.grad to the
previous one; the four curves over all x come from ONE tape.eval_batch call.
The k-th derivative is (-1)^k H_k(x) exp(-x^2), with H_k the physicists'
Hermite polynomials (the test checks it).

    python examples/higher_order_gaussian.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import sys

import numpy as np

import pyrograd as pg

ORDERS = 3
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "out" / "higher_order_gaussian"


def gaussian_derivatives(xs, orders=ORDERS):
    """exp(-x^2) and its derivatives of orders 1..orders at each of xs:
    an array of shape (len(xs), orders + 1), column k the k-th derivative.

    Also returns the number of nodes the derivatives added to the tape."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    curves = [pg.exp(-(x**2))]
    before = len(tape)
    for _ in range(orders):
        curves.append(pg.grad(curves[-1], x))
    added = len(tape) - before
    data = np.ascontiguousarray(np.asarray(xs, dtype=np.float64).reshape(-1, 1))
    values = tape.eval_batch(curves, [x], data)  # every curve, every x: one C call
    return values.reshape(len(data), orders + 1), added


def draw(xs, values, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = ["exp(-x²)", "1st derivative", "2nd derivative", "3rd derivative"]
    for k in range(values.shape[1]):
        ax.plot(xs, values[:, k], label=labels[k] if k < len(labels) else f"order {k}")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set(xlabel="x", title="exp(-x²) and its derivatives, by pg.grad applied repeatedly")
    ax.legend()
    path = out / "higher_order_gaussian.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="61 points instead of 601, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                        help="folder for the picture (default: examples/out/higher_order_gaussian)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("higher_order_gaussian.py draws with matplotlib: pip install 'pyrograd[examples]'")

    xs = np.linspace(-3, 3, 61 if args.quick else 601)
    values, added = gaussian_derivatives(xs)
    print(f"derivatives of orders 1 to {ORDERS} added {added} nodes to the tape")
    for x0 in (-2.0, -1.0, 0.0, 0.5, 1.0, 2.0):
        row = values[np.argmin(np.abs(xs - x0))]
        print(f"x = {x0:+.1f}: " + "  ".join(f"d{k} = {v:+.6f}" for k, v in enumerate(row)))
    args.out.mkdir(parents=True, exist_ok=True)
    path = draw(xs, values, args.out)
    print(f"picture: {path}")


if __name__ == "__main__":
    main()
