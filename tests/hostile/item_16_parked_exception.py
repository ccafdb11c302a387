"""Item 16: after a user function's exception and a successful retry, the
exception is no longer referenced by pyrograd: a weakref to it is dead
after gc (value, derive, backprop, pg.grad, eval_batch and grad_batch on
one and two threads, optimizer.run), with f or df failing on every input
or on some rows only."""
import gc
import math
import weakref

import numpy as np

import pyrograd as pg
from _hostile import ok


class Oops(Exception):
    pass


class Flaky:
    """func, which raises (a fresh Oops each time) while armed: on every
    input, or (armed == "positive") on inputs above 0 only."""

    def __init__(self, func):
        self.func = func
        self.armed = False

    def __call__(self, v):
        if self.armed is True or (self.armed == "positive" and v > 0):
            raise Oops(v)
        return self.func(v)


f, df = Flaky(math.sin), Flaky(math.cos)
tape = pg.Tape()
x, w = tape.term("x", 0.5), tape.term("w", 1.5)
y = x.apply("flaky", f, df) * w
data = np.linspace(-1, 1, 64).reshape(-1, 1)

READS = {
    "value": lambda: (x.set(0.25), y.value),
    "values": lambda: (x.set(0.27), tape.values([y])),
    "derive": lambda: (x.set(0.3), y.derive(x)),
    "backprop": lambda: (x.set(0.35), y.backprop()),
    "pg.grad": lambda: (x.set(0.4), pg.grad(y, x).value),
    "eval_batch threads=1": lambda: tape.eval_batch(y, [x], data, threads=1),
    "eval_batch threads=2": lambda: tape.eval_batch(y, [x], data, threads=2),
    "grad_batch threads=1": lambda: tape.grad_batch(y, [x], data, [w], threads=1),
    "grad_batch threads=2": lambda: tape.grad_batch(y, [x], data, [w], threads=2),
    "optimizer.run": lambda: pg.optim.SGD([w], lr=0.0).run(y, [x], data, epochs=2, threads=2),
}


def fail_once(read, flaky, how):
    """A weakref to the exception read() raised while flaky was armed, or
    None if it did not raise (the read did not need flaky)."""
    flaky.armed = how
    try:
        read()
    except Oops as error:
        return weakref.ref(error)
    finally:
        flaky.armed = False
    return None


leaks, failed = [], 0
for what, read in READS.items():
    for flaky, how in [(f, True), (df, True), (f, "positive"), (df, "positive")]:
        ref = fail_once(read, flaky, how)
        if ref is None:
            continue
        failed += 1
        read()  # the retry succeeds
        gc.collect()
        if ref() is not None:
            holders = [type(r).__name__ for r in gc.get_referrers(ref())]
            leaks.append(f"{what}, {'f' if flaky is f else 'df'} failing ({how}): the exception is still "
                         f"referenced (by {holders})")
assert failed >= len(READS) * 2, failed
assert not leaks, "\n".join(leaks)
ok()
