"""`python -m pyrograd`: a tour in three steps.

1. rustograd's first example, (a + b) * c, with derive and backprop.
2. rustograd's benchmark workload: fit s * exp(-(x - mu)^2 / sigma^2) to
   0.75 * exp(-(x - 1.2)^2 / 0.35) sampled at x = -4.0, -3.9, ..., 3.9, by 100
   epochs of gradient descent with learning rate 0.01 (each epoch sums the
   gradients of every sample at the epoch's starting parameters).
3. The fitted model's graph, with values and grads, written as a .dot file.
"""
import argparse
import math
import pathlib
import time

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


def fit(samples, epochs=100, rate=0.01):
    """One fit from mu = 0, sigma = 1, s = 1; returns the fitted (mu, sigma, s) and the graph."""
    tape, x, y, params, loss = gaussian_model()
    current = [p.value for p in params]
    for _ in range(epochs):
        for p, v in zip(params, current):
            p.set(v)
        step = list(current)
        for xs, ys in samples:
            x.set(xs)
            y.set(ys)
            loss.backprop()
            for k, p in enumerate(params):
                step[k] -= rate * p.grad
        current = step
    for p, v in zip(params, current):
        p.set(v)
    return current, loss


def curve_fit(dot_path):
    samples = [(i / 10, 0.75 * math.exp(-((i / 10 - 1.2) ** 2) / 0.35)) for i in range(-40, 40)]

    times = []
    for _ in range(5):
        start = time.perf_counter()
        (mu, sigma, scale), loss = fit(samples)
        times.append(time.perf_counter() - start)
    times.sort()
    print("\nGaussian curve fit (rustograd's benchmark: 80 samples, 100 epochs, rate 0.01)")
    print(f"  fitted mu = {mu:.4f}, sigma = {sigma:.5f}, s = {scale:.5f}"
          "  (expected 1.2000, 0.59576, 0.74520)")
    print(f"  time per fit: {times[len(times) // 2] * 1e3:.1f} ms (median of {len(times)}, "
          "a Python loop over samples; one backprop per sample)")

    loss.backprop()
    dot_path.write_text(loss.dot(show_values=True))
    print(f"\nGraph of the fitted model's loss written to {dot_path}"
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
