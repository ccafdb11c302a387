"""Item 4: registering apply functions on a tape that another thread is
sweeping: TapeBusyError is fine, but afterwards deepcopy, pickle and sweeps
work (and nothing aborts or corrupts memory)."""
import copy
import math
import pickle
import threading
import time

import numpy as np

import pyrograd as pg
from _hostile import ok, scaled


def f(v):
    return math.tanh(v) + 0.1


def df(v):
    return 1.0 - math.tanh(v) ** 2


def g(v):
    return 0.5 * v


def dg(v):
    return 0.5


def d2g(v):
    return 0.0


# a chain of derivatives: registering an op with DG registers DG too, linked
DG = pg.unary("dg", dg, pg.unary("d2g", d2g, None))


def one_round():
    tape = pg.Tape()
    x = tape.term("x", 0.2)
    y = x
    for _ in range(200):
        y = y.apply("f", f, df)
    data = np.linspace(-1, 1, 40).reshape(-1, 1)
    want_y = y.value
    want_batch = tape.eval_batch(y, [x], data, threads=1)

    stop = threading.Event()
    sweeper_errors = []

    def sweep():
        try:
            while not stop.is_set():
                for call in (lambda: y.value, lambda: tape.eval_batch(y, [x], data, threads=2),
                             lambda: y.derive(x), lambda: y.backprop(), lambda: pg.grad(y, x).value):
                    try:
                        call()
                    except pg.TapeBusyError:
                        pass
                    time.sleep(0.0002)  # windows for the other thread, now and then
        except BaseException as error:  # noqa: BLE001
            sweeper_errors.append(error)

    thread = threading.Thread(target=sweep)
    thread.start()
    made, busy = [], 0
    try:
        for k in range(scaled(4000, least=500)):
            try:  # a new function each time, of each kind
                how = k % 3
                if how == 0:
                    made.append((k, x.apply(f"g{k}", g, dg)))
                elif how == 1:
                    made.append((k, pg.apply(x, f"h{k}", g, dg, d2g)))
                else:
                    made.append((k, pg.unary(f"u{k}", g, DG)(x)))
            except pg.TapeBusyError:
                busy += 1
            if k % 50 == 0:
                try:
                    pickle.loads(pickle.dumps(tape))
                except pg.TapeBusyError:
                    pass
    finally:
        stop.set()
        thread.join()
    assert not sweeper_errors, sweeper_errors
    print(f"{len(made)} registered, {busy} refused as busy")

    # afterwards everything works, and every node registered is right
    assert y.value == want_y
    assert tape.eval_batch(y, [x], data, threads=2).tolist() == want_batch.tolist()
    for k, term in made:
        assert term.value == 0.5 * x.value, k
    copied = copy.deepcopy(tape)
    loaded = pickle.loads(pickle.dumps(tape))
    for other in (copied, loaded):
        assert len(other) == len(tape)
        assert other[y.index].value == want_y
        for k, term in made:
            assert other[term.index].value == 0.5 * x.value
        other[0].set(0.4)
        for k, term in made[-6:]:
            assert other[term.index].derive(other[0]) == 0.5, k
            if k % 3:  # these know their second derivative
                assert pg.grad(pg.grad(other[term.index], other[0]), other[0]).value == 0.0, k


for _ in range(4):
    one_round()
ok()
