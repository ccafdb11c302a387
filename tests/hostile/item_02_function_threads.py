"""Item 2: a @pg.function called from many threads at once returns each
call's own result (every result is checked), traced or not yet traced."""
import threading

import numpy as np

import pyrograd as pg
from _hostile import ok, scaled

THREADS = 8
CALLS = scaled(400, least=50)


def make():
    @pg.function
    def f(x, y):
        return pg.sin(x) * y + x * x - pg.exp(-y)
    return f


reference = make()
args = [(0.01 * k - 1.0, 0.5 + 0.001 * k) for k in range(THREADS * CALLS)]
want = [reference(x, y) for x, y in args]
want_grad = [reference.grad(x, y) for x, y in args[:THREADS * 20]]
want_batch = reference(np.array([a[0] for a in args[:50]]), 2.0)


def hammer(f, start_line):
    failures = []

    def work(t):
        start_line.wait()
        try:
            for k in range(t, len(args), THREADS):
                got = f(*args[k])
                if got != want[k]:
                    failures.append(("call", k, got, want[k]))
                if k < len(want_grad):
                    got = f.grad(*args[k])
                    if got != want_grad[k]:
                        failures.append(("grad", k, got, want_grad[k]))
                if k % 97 == 0:
                    got = f(np.array([a[0] for a in args[:50]]), 2.0)
                    if not np.array_equal(got, want_batch):
                        failures.append(("batch", k))
        except Exception as error:  # noqa: BLE001  every call must give its result
            failures.append(("raised", repr(error)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, f"{len(failures)} wrong results, first {failures[:3]}"


# traced already, then not yet traced: the first calls race to trace it
traced = make()
traced(0.0, 1.0)
for f in (traced, make(), make()):
    hammer(f, threading.Barrier(THREADS))
ok()
