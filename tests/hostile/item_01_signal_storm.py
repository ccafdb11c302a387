"""Item 1: a storm of signals whose handler raises, arriving while Python
functions of the tape run.  Every call returns exactly the value it returns
undisturbed, or raises the handler's exception; nothing else (and nothing on
stderr such as "Exception ignored from cffi callback")."""
import math

import numpy as np

import pyrograd as pg
from _hostile import SignalStorm, Storm, ok, scaled


def f(v):
    return math.sin(v) + 0.25 * v


def df(v):
    return math.cos(v) + 0.25


STEP = pg.unary("step_u", f, pg.unary("dstep_u", df, lambda v: -math.sin(v)))

tape = pg.Tape()
x, w = tape.term("x", 0.3), tape.term("w", 0.7)
y = x * w
for k in range(20):
    y = y.apply("f", f, df) if k % 2 else STEP(y)
loss = y * y
g = pg.grad(y, x)
xs = [0.1 * k - 1.0 for k in range(21)]
data = np.linspace(-1.0, 1.0, 60).reshape(-1, 1)


def at(v):
    """x at v, w where it starts (optimizer.run moves it)."""
    x.set(v)
    w.set(0.7)


def value_at(v):
    at(v)
    return y.value


def derive_at(v):
    at(v)
    return y.derive(x)


def grad_graph_at(v):
    at(v)
    return g.value


def backprop_at(v):
    at(v)
    loss.backprop()
    return tuple(tape.grads([x, w]).tolist())


def eval_batch(threads):
    return lambda v: at(v) or tape.eval_batch([y, g], [x], data * v, threads=threads).tolist()


def grad_batch(threads):
    def call(v):
        at(v)
        total, grads = tape.grad_batch(loss, [x], data * v, [w], threads=threads)
        return total, grads.tolist()
    return call


def run(threads):
    def call(v):
        at(v)
        opt = pg.optim.SGD([w], lr=0.01)
        losses = opt.run(loss, [x], data * v, epochs=2, threads=threads)
        return losses.tolist(), w.value, opt.steps
    return call


WORK = {
    "value": value_at, "derive": derive_at, "pg.grad value": grad_graph_at, "backprop": backprop_at,
    "eval_batch threads=1": eval_batch(1), "eval_batch threads=2": eval_batch(2),
    "grad_batch threads=1": grad_batch(1), "grad_batch threads=2": grad_batch(2),
    "optimizer.run threads=1": run(1), "optimizer.run threads=2": run(2),
}
expected = {name: [call(v) for v in xs] for name, call in WORK.items()}

for error, how in [(Storm, "alarm"), (KeyboardInterrupt, "alarm"), (KeyboardInterrupt, "kill")]:
    raised = 0
    for name, call in WORK.items():
        rounds = scaled(25 if "batch" in name or "run" in name else 120, least=10)
        with SignalStorm(error, interval=300e-6, rate=0.05, how=how, seed=len(name)) as storm:
            for r in range(rounds):
                k = r % len(xs)
                kind, got = storm.guarded(lambda: call(xs[k]))
                if kind == "raised":
                    raised += 1
                    continue
                assert got == expected[name][k], (name, error.__name__, xs[k], got, expected[name][k])
        # afterwards the tape is as good as new
        assert [call(v) for v in xs] == expected[name], (name, "after the storm")
    assert raised > 0, "the storm interrupted nothing: make it denser"
    print(f"{error.__name__} by {how}: {raised} calls interrupted")
ok()
