"""Item 8: a user function that fails (math.log of -1) affects only the
nodes that depend on it: a new leaf and every node not depending on the
failing one read normally (value, backprop, derive, values, grad_batch,
eval_batch); reading the failing node raises ValueError every time and calls
the function again, so it succeeds once its input is fixed."""
import math

import numpy as np

import pyrograd as pg
from _hostile import ok

calls = []


def mlog(v):
    calls.append(v)
    return math.log(v)


tape = pg.Tape()
x = tape.term("x", -1.0)
w = tape.term("w", 3.0)
before = w * w + 1.0  # made before the failing node, not depending on it
bad = x.apply("mlog", mlog, lambda v: 1 / v)
after_bad = bad * 2.0 + w  # depends on it
z = tape.term("z", 4.0)  # a new leaf after it
good = z * w + pg.sin(z)  # made after it, not depending on it
data = np.array([[0.5], [1.5], [2.5]])


def reads_normally():
    assert z.value == 4.0
    assert before.value == 10.0
    assert good.value == 12.0 + math.sin(4.0)
    assert good.derive(z) == 3.0 + math.cos(4.0)
    assert good.derive(w) == 4.0
    good.backprop()
    assert tape.grads([z, w]).tolist() == [3.0 + math.cos(4.0), 4.0]
    before.backprop()
    assert w.grad == 6.0
    assert tape.values([z, before, good]).tolist() == [4.0, 10.0, 12.0 + math.sin(4.0)]
    for threads in (1, 2):
        assert tape.eval_batch([good, before], [z], data, threads=threads).tolist() == [
            [v * 3.0 + math.sin(v), 10.0] for v in data[:, 0]]
        total, grads = tape.grad_batch(good, [z], data, [w], threads=threads)
        want = sum(v * 3.0 + math.sin(v) for v in data[:, 0])  # two threads add in another order
        assert abs(total - want) <= 1e-14 * abs(want) and grads.tolist() == [data.sum()], (total, grads)
    assert pg.grad(good, z).value == 3.0 + math.cos(4.0)


def fails_and_calls_again(read):
    n = len(calls)
    try:
        read()
    except ValueError:
        pass
    else:
        raise AssertionError("reading a node that depends on log(-1) did not raise ValueError")
    assert len(calls) > n, "the failing function was not called again"


for rounds in range(3):
    for read in (lambda: bad.value, lambda: after_bad.value, lambda: after_bad.backprop(),
                 lambda: after_bad.derive(w), lambda: tape.values([after_bad]),
                 lambda: tape.eval_batch(after_bad, [z], data, threads=1)):
        fails_and_calls_again(read)
        reads_normally()
x.set(2.0)
assert bad.value == math.log(2.0)
assert after_bad.value == 2.0 * math.log(2.0) + 3.0
reads_normally()
ok()
