"""rustograd's mixed_sine.png: sin(a) + 0.2 sin(5a), with d/da by derive and by backprop.

The graph is rustograd's mixed_sine.rs: a leaf `a`, a constant 5 and a leaf
c = 0.2, giving sin(a) + c * sin(a * 5).  As in sine.py, the value curve is
one eval_batch and each a gets one forward and one reverse sweep; both must
equal the closed form cos(a) + cos(5a) (0.2 * 5 = 1).

    python examples/mixed_sine.py [--quick] [--out DIR]
"""
import pathlib
import sys

import numpy as np

import pyrograd as pg

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # sine.py lives beside this file
from sine import run  # noqa: E402

C = 0.2


def mixed_sine(tape):
    """rustograd's mixed_sine.rs: returns (a, sin(a) + c * sin(a * 5))."""
    a = tape.term("a")
    five = tape.const(5.0, "5")
    c = tape.term("c", C)
    return a, pg.sin(a) + c * pg.sin(a * five)


def mixed_sine_derivative(xs):
    return np.cos(xs) + C * 5 * np.cos(5 * xs)


def main(argv=None):
    run("mixed_sine", __doc__, mixed_sine, "sin(a) + 0.2 sin(5a)", mixed_sine_derivative, 2 * np.pi, argv)


if __name__ == "__main__":
    main()
