"""Item 14: @pg.function refuses None, numeric strings, datetime64 and Terms
(of any tape) with a TypeError, traced or not yet; a function of *args gets
a clear TypeError rather than a wrong trace."""
import numpy as np

import pyrograd as pg
from _hostile import ok

other = pg.Tape()
BAD = {
    "None": None, "a numeric str": "1.5", "a numeric bytes": b"2", "datetime64": np.datetime64("2020-01-01"),
    "timedelta64": np.timedelta64(3, "s"), "a Term": other.term("t", 1.0), "an array of str": np.array(["1.0"]),
    "an array of objects": np.array([None, 1.0], dtype=object), "an array of datetime64":
        np.array(["2020-01-01"], dtype="datetime64[D]"), "a complex": 1 + 2j,
}


def make():
    @pg.function
    def f(x, y):
        return x * y + 1.0
    return f


for traced_first in (False, True):
    for what, bad in BAD.items():
        for position in (0, 1):
            f = make()
            if traced_first:
                assert f(2.0, 3.0) == 7.0
            args = [2.0, 3.0]
            args[position] = bad
            try:
                got = f(*args)
            except TypeError as error:
                assert str(error), what
            else:
                raise AssertionError(f"{what} as argument {position} (traced first: {traced_first}) gave {got!r}")
            assert f(2.0, 3.0) == 7.0, f"{what}: the function no longer works after refusing it"
            assert f.grad(2.0, 3.0) == (3.0, 2.0)


def variadic(*xs):
    return sum(xs)


def keyword_only(x, *, y=1.0):
    return x * y


for fn in (variadic, keyword_only):
    try:
        traced = pg.function(fn)
        got = traced(1.0, 2.0, 3.0) if fn is variadic else traced(1.0)
    except TypeError as error:
        assert fn.__name__ in str(error) or "*" in str(error) or "argument" in str(error), str(error)
    else:
        want = 6.0 if fn is variadic else 1.0
        assert got == want, f"{fn.__name__}: {got}, not {want}"
ok()
