"""Item 13: a long non-ASCII apply name through pg.grad (whose derivative
names are made, and cut, in C), then pickle, deepcopy, dot, to_arrays and
error messages: no UnicodeDecodeError.  A NUL in a name raises ValueError in
term, const, apply and extend."""
import copy
import math
import pickle

import numpy as np

import pyrograd as pg
from _hostile import ok


def f(v):
    return math.sin(v)


def df(v):
    return math.cos(v)


def d2f(v):
    return -math.sin(v)


for name in ("é" * 150, "ж" * 99 + "x" + "ж" * 99, "😀" * 70, "x" + "日本語" * 60, "ü" * 127 + "a"):
    tape = pg.Tape()
    x = tape.term("x" + name, 0.5)
    y = pg.apply(x, name, f, df, d2f)
    for _ in range(3):  # f', f'', then none: the error names the function
        try:
            y = pg.grad(y, x)
        except pg.DerivativeError as error:
            str(error).encode("utf-8")
            break
    y.value
    tape.dot(show_values=True)
    y.dot()
    tape.to_arrays()
    repr(tape), repr(y)
    copied = copy.deepcopy(tape)
    loaded = pickle.loads(pickle.dumps(tape))
    for other in (copied, loaded):
        assert other[y.index].value == y.value
        other.dot()
        pickle.loads(pickle.dumps(other))
    state_names = [name for name in loaded.to_arrays()["names"].values()]
    assert all(isinstance(n, str) for n in state_names)

tape = pg.Tape()
x = tape.term("x", 1.0)
for what, call in [
    ("term", lambda: tape.term("a\0b", 1.0)),
    ("const", lambda: tape.const(2.0, name="a\0b")),
    ("apply", lambda: x.apply("f\0g", f, df)),
    ("pg.apply", lambda: pg.apply(x, "f\0g", f, df, d2f)),
    ("pg.unary", lambda: pg.unary("u\0v", f, df)(x)),
    ("extend", lambda: tape.extend(["leaf"], value=[1.0], names={len(tape): "a\0b"})),
]:
    n = len(tape)
    try:
        call()
    except ValueError:
        pass
    else:
        raise AssertionError(f"{what}: a name with a NUL was taken (C would cut it at the NUL)")
    assert len(tape) == n, f"{what}: a node was appended before the name was refused"
assert pickle.loads(pickle.dumps(tape)).to_arrays()["names"] == {0: "x"}
ok()
