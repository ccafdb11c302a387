"""Item 11: zero times an infinite partial.  pg.grad(x ** y, x) at y = 0,
x = 0 is 0, as backprop gives; and the modes (backprop, derive, pg.grad,
pg.hessian, pg.jacobian) agree on relu(x) * sqrt(x) and sqrt(x * x) at 0,
where the rule is that a zero factor in the chain rule makes a zero term:
both derivatives are 0."""
import math

import numpy as np

import pyrograd as pg
from _hostile import ok


def modes(make, at, wrt=0):
    """The first derivative of make(*leaves) by each mode, at the point `at`."""
    tape = pg.Tape()
    xs = [tape.term(f"x{k}", v) for k, v in enumerate(at)]
    y = make(*xs)
    x = xs[wrt]
    y.backprop()
    got = {"backprop": x.grad, "derive": y.derive(x), "pg.grad": pg.grad(y, x).value,
           "jacobian": float(pg.jacobian([y], xs)[0, wrt])}
    # second order: pg.hessian against pg.grad twice
    second = pg.grad(pg.grad(y, x), x).value
    hess = float(pg.hessian(y, xs)[wrt, wrt])
    return got, second, hess


cases = [
    ("x ** y at x = 0, y = 0", lambda x, y: x ** y, (0.0, 0.0), 0.0),
    ("relu(x) * sqrt(x) at 0", lambda x: pg.relu(x) * pg.sqrt(x), (0.0,), 0.0),
    ("sqrt(x * x) at 0", lambda x: pg.sqrt(x * x), (0.0,), 0.0),
]
for what, make, at, want in cases:
    got, second, hess = modes(make, at)
    for mode, value in got.items():
        assert value == want, f"{what}: {mode} gives {value}, not {want} (all: {got})"
    assert not math.isnan(hess) and not math.isnan(second), f"{what}: second derivatives {second}, {hess}"
    assert hess == second, f"{what}: pg.hessian gives {hess}, pg.grad twice {second}"
    # and in batches
    tape = pg.Tape()
    xs = [tape.term(f"x{k}", v) for k, v in enumerate(at)]
    y = make(*xs)
    _, grads = tape.grad_batch(y, xs, np.array([at]), [xs[0]], threads=1)
    assert grads.tolist() == [want], f"{what}: grad_batch gives {grads}"
    assert tape.eval_batch(pg.grad(y, xs[0]), xs, np.array([at]), threads=1).tolist() == [want]  # (N,) for one Term
ok()
