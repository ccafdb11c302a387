"""`python -m pyrograd`: a tour in three steps.

1. rustograd's first example, (a + b) * c, with derive and backprop.
2. rustograd's benchmark workload: fit s * exp(-(x - mu)^2 / sigma^2) to
   0.75 * exp(-(x - 1.2)^2 / 0.35) sampled at x = -4.0, -3.9, ..., 3.9, by 100
   epochs of gradient descent with learning rate 0.01 (each epoch sums the
   gradients of every sample at the epoch's starting parameters), the whole
   loop in one C call.
3. The fitted model's graph, with values and grads, written as a .dot file.
"""
import argparse
import pathlib
import time

import numpy as np

import pyrograd as pg


def arithmetic():
    tape = pg.Tape()
    a = tape.term("a", 123.0)
    b = tape.term("b", 321.0)
    c = tape.term("c", 42.0)
    abc = (a + b) * c
    print("(a + b) * c with a = 123, b = 321, c = 42")
    print(f"  value             {abc.value:g}")
    print(f"  derive by a, b, c {abc.derive(a):g}, {abc.derive(b):g}, {abc.derive(c):g}")
    abc.backprop()
    print(f"  backprop grads    {a.grad:g}, {b.grad:g}, {c.grad:g}")


def gaussian_model():
    """The curve-fit model of rustograd's tape_curve_fit example."""
    tape = pg.Tape()
    x = tape.term("x")
    mu = tape.term("mu", 0.0)
    sigma = tape.term("sigma", 1.0)
    scale = tape.term("scale", 1.0)
    x_mu = x - mu
    gaussian = scale * pg.exp(-(x_mu * x_mu) / sigma / sigma)
    sample_y = tape.term("y")
    diff = gaussian - sample_y
    loss = diff * diff
    return tape, x, sample_y, (mu, sigma, scale), loss


def curve_fit(dot_path):
    xs = np.arange(-40, 40) / 10
    data = np.column_stack([xs, 0.75 * np.exp(-((xs - 1.2) ** 2) / 0.35)])

    times = []
    for _ in range(21):
        tape, x, y, params, loss = gaussian_model()
        start = time.perf_counter()
        # 100 epochs, each a grad_batch over the 80 samples and an SGD step, in one C call.
        pg.optim.SGD(params, lr=0.01).run(loss, [x, y], data, epochs=100)
        times.append(time.perf_counter() - start)
    mu, sigma, scale = tape.values(params)
    print("\nGaussian curve fit (rustograd's benchmark: 80 samples, 100 epochs, rate 0.01)")
    print(f"  fitted mu = {mu:.4f}, sigma = {sigma:.5f}, s = {scale:.5f}"
          "  (rustograd: 1.2000, 0.59576, 0.74520)")
    print(f"  time per fit: {np.median(times) * 1e3:.3f} ms (median of {len(times)})")

    x.set(data[0, 0])
    y.set(data[0, 1])
    loss.backprop()
    dot_path.write_text(loss.dot(show_values=True))
    print(f"\nGraph of the loss at the first sample written to {dot_path}"
          f" (render it with: dot -Tsvg {dot_path} -o {dot_path.with_suffix('.svg')})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pyrograd", description=__doc__.splitlines()[0])
    parser.add_argument("--dot", type=pathlib.Path, default=pathlib.Path("pyrograd_curve_fit.dot"),
                        help="where to write the graph (default: %(default)s)")
    args = parser.parse_args(argv)
    arithmetic()
    curve_fit(args.dot)


if __name__ == "__main__":
    main()
