"""Item 3: Python's math on a Term inside @pg.function tracing raises a
TypeError that names the pg function to use; a traced `if x < 0:` never
silently takes the first call's branch on a later call."""
import math

import pyrograd as pg
from _hostile import ok

for name in ("sin", "exp", "log", "sqrt", "cos", "tanh"):
    @pg.function
    def f(x):
        return getattr(math, name)(x) + x

    try:
        f(0.5)
    except TypeError as error:
        assert f"pg.{name}" in str(error), f"math.{name}(term): the message does not name pg.{name}: {error}"
    else:
        raise AssertionError(f"math.{name}(term) inside @pg.function was traced as a constant")


def branchy(x):
    if x < 0:
        return -2.0 * x
    return x * x


def with_float(x):
    return 3.0 * x if float(x) > 1.0 else x


def with_max(x):
    return max(x, 0.5) * 2.0


def right_or_clear(traced, fn, v, what):
    """traced(v) is fn(v), or raises an exception that says something."""
    try:
        got = traced(v)
    except (pg.PyrogradError, TypeError, ValueError, RuntimeError) as error:
        assert str(error), "the exception says nothing"
        return False
    assert got == fn(v), f"{fn.__name__} {what}: {got}, not {fn(v)}: the traced branch was taken silently"
    return True


for fn, first, later in [(branchy, 2.0, -3.0), (branchy, -3.0, 2.0), (with_float, 2.0, 0.5),
                         (with_max, 2.0, 0.1)]:
    traced = pg.function(fn)
    if right_or_clear(traced, fn, first, f"at {first}"):
        for attempt in range(2):  # and again, after the first call that went the other way
            right_or_clear(traced, fn, later, f"traced at {first}, called at {later}")
ok()
