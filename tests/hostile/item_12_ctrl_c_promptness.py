"""Item 12: Ctrl-C (a SIGALRM handler that raises KeyboardInterrupt) during
long calls on a big tape: eval_batch, grad_batch with two threads,
optimizer.run, pg.grad and extend.  KeyboardInterrupt arrives within
BOUND seconds of the signal, and the tape works afterwards."""
import signal
import time

import numpy as np

import pyrograd as pg
from _hostile import SLOWDOWN, model, ok

DELAY = 0.2  # seconds into the call that the signal comes
LONG = 1.5  # seconds each call would take undisturbed (sized from a sample)
BOUND = 0.5 * SLOWDOWN  # seconds from the signal to KeyboardInterrupt: generous
MAX_NODES = 20_000_000  # a cap on the tapes' size, whatever the machine's speed


def on_alarm(signum, frame):
    raise KeyboardInterrupt("the alarm")


signal.signal(signal.SIGALRM, on_alarm)
late = []


def sized(run, sample, cap, long=LONG):
    """How many units run(n) needs to take `long` seconds, from run(sample)."""
    start = time.perf_counter()
    run(sample)
    per_unit = (time.perf_counter() - start) / sample
    return min(cap, int(long / per_unit) + sample)


def latency(what, call, delay=DELAY):
    """Seconds from the signal, `delay` s in, to KeyboardInterrupt out of call()."""
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, delay)
    try:
        call()
    except KeyboardInterrupt:
        end = time.perf_counter()
    else:
        end = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert end - start < delay, f"{what}: the signal came at {delay} s and the call ended at {end - start:.2f} s " \
                                    f"without KeyboardInterrupt"
        raise AssertionError(f"{what}: the call took {end - start:.2f} s, too short to be interrupted: size it up")
    waited = end - (start + delay)
    print(f"{what}: KeyboardInterrupt {waited:.3f} s after the signal")
    if waited >= BOUND:  # the others are measured too, then this fails
        late.append(f"{what}: KeyboardInterrupt came {waited:.2f} s after the signal (bound {BOUND} s)")


tape, x, w, loss = model()
small = np.linspace(-1, 1, 50).reshape(-1, 1)
want_values = tape.eval_batch(loss, [x], small, threads=1)
want_total, want_grads = tape.grad_batch(loss, [x], small, [w], threads=1)


def works():
    w.set(0.5)
    assert tape.eval_batch(loss, [x], small, threads=2).tolist() == want_values.tolist()
    total, grads = tape.grad_batch(loss, [x], small, [w], threads=1)
    assert total == want_total and grads.tolist() == want_grads.tolist()


for threads in (1, 2):
    rows = sized(lambda n: tape.eval_batch(loss, [x], np.zeros((n, 1)), threads=threads), 2000, 10**7)
    data = np.zeros((rows, 1))
    latency(f"eval_batch threads={threads}", lambda: tape.eval_batch(loss, [x], data, threads=threads))
    works()
    rows = sized(lambda n: tape.grad_batch(loss, [x], np.zeros((n, 1)), [w], threads=threads), 1000, 10**7)
    data = np.zeros((rows, 1))
    latency(f"grad_batch threads={threads}", lambda: tape.grad_batch(loss, [x], data, [w], threads=threads))
    works()

data = np.linspace(-1, 1, 500).reshape(-1, 1)
epochs = sized(lambda n: pg.optim.SGD([w], lr=0.0).run(loss, [x], data, epochs=n), 5, 10**6)
opt = pg.optim.SGD([w], lr=1e-6)
latency("optimizer.run", lambda: opt.run(loss, [x], data, epochs=epochs))
assert 0 < opt.steps < epochs
works()


def _sin_code():
    """The op code of sin, as Tape.extend takes it in an array."""
    tape = pg.Tape()
    pg.sin(tape.term("x", 0.0))
    return tape.to_arrays()["op"][-1]


SIN = _sin_code()


def chain(n):
    """A tape: x, then n nodes of sin of the one before."""
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    tape.extend(np.full(n, SIN, np.uint8), a=np.arange(n, dtype=np.uint32), b=np.zeros(n, np.uint32))
    return tape, x


def grad_of_chain(n):
    tape, x = chain(n)
    return tape, x, (lambda: pg.grad(tape[len(tape) - 1], x))


def timed_grad(n):
    _, _, call = grad_of_chain(n)
    call()


n = sized(timed_grad, 50_000, MAX_NODES // 3)
tape2, x2, call = grad_of_chain(n)
latency(f"pg.grad of a chain of {n} nodes", call)
x2.set(0.25)
g = pg.grad(tape2[20], x2)  # the tape still builds and sweeps: d sin(...sin(x)) / dx, 20 deep
want, v = 1.0, 0.25
for _ in range(20):
    want, v = want * np.cos(v), np.sin(v)
assert abs(g.value - want) < 1e-12 and abs(tape2[20].derive(x2) - want) < 1e-12, (g.value, want)


def extend(tape, n):
    start = len(tape)
    tape.extend(np.full(n, SIN, np.uint8), a=np.arange(start - 1, start - 1 + n, dtype=np.uint32),
                b=np.zeros(n, np.uint32))


probe, _ = chain(1)
n = sized(lambda n: extend(probe, n), 3_000_000, MAX_NODES, long=2.0)  # it gets faster per node as it grows
del probe
tape3, x3 = chain(1)
arrays = np.full(n, SIN, np.uint8), np.arange(1, 1 + n, dtype=np.uint32), np.zeros(n, np.uint32)
latency(f"extend by {n} nodes", lambda: tape3.extend(arrays[0], a=arrays[1], b=arrays[2]), delay=0.05)
del arrays
assert len(tape3) in (2, 2 + n), "an interrupted extend appends all or nothing"
extend(tape3, 10)  # it still grows, and sweeps
last = len(tape3) - 1
assert abs(tape3[last].value - np.sin(tape3[last - 1].value)) < 1e-15
v = 0.5
for _ in range(11):
    v = np.sin(v)
assert abs(tape3[11].value - v) < 1e-12
assert not late, "\n".join(late)
ok()
