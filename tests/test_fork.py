"""A child forked while other threads use tapes gets them back usable."""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# Forks a process in which one thread sweeps a long tape over and over and
# another appends to tapes in big extends: each child checks, against fresh
# copies, that it can read values and grads, build nodes and set leaves on
# both, then exits 0.  The parent exits with the number of children that failed.
SCRIPT = textwrap.dedent("""
    import os, sys, threading, traceback
    import numpy as np
    import pyrograd as pg
    from pyrograd._binding import OPS

    N, M, FORKS = 400_000, 100_000, 12

    def chain(length):
        op = np.full(length + 1, OPS["sin"], np.uint8)
        op[0] = OPS["leaf"]
        return op

    def operands(start, length):  # node k of the chain reads node k - 1
        return np.maximum(np.arange(start - 1, start + length, dtype=np.int64), 0).astype(np.uint32)

    tape = pg.Tape()
    tape.extend(chain(N), operands(0, N), value=np.r_[0.5, np.zeros(N)])
    x, y = tape[0], tape[N]
    growing = [pg.Tape()]
    stop = threading.Event()

    def sweep():
        k = 0
        while not stop.is_set():
            try:
                x.set(0.1 + k % 7 * 0.1)
                y.value
                y.backprop()
            except pg.TapeBusyError:
                pass
            k += 1

    def grow():
        while not stop.is_set():
            t = growing[0] = pg.Tape()
            for _ in range(3):
                start = len(t)
                t.extend(chain(M), operands(start, M), value=np.r_[0.25, np.zeros(M)],
                         names={start: f"x{start}"})

    def copy_of(t):
        fresh = pg.Tape()
        fresh.extend(**t.to_arrays())
        return fresh

    def check_child():
        ref = copy_of(tape)
        assert y.value == ref[N].value
        y.backprop()
        ref[N].backprop()
        assert x.grad == ref[0].grad != 0.0
        z = y * 2.0 + x
        assert z.value == 2.0 * y.value + x.value
        x.set(0.75)
        ref[0].set(0.75)
        assert y.value == ref[N].value
        assert y.derive(x) == ref[N].derive(ref[0])

        t = growing[0]
        n = len(t)
        assert n % (M + 1) == 0, n  # whole extends, each node written before it is counted
        arrays = t.to_arrays()
        assert (arrays["op"] == np.tile(chain(M), n // (M + 1))).all()
        for start in range(0, n, M + 1):
            assert (arrays["a"][start + 1:start + M + 1] == operands(start, M)[1:]).all()
        assert set(arrays["names"]) <= set(range(0, n, M + 1))
        if n:
            assert t[n - 1].value == copy_of(t)[n - 1].value
        leaf = t.term("new", 2.0)
        assert (leaf * 3.0).value == 6.0

    threads = [threading.Thread(target=sweep), threading.Thread(target=grow)]
    for thread in threads:
        thread.start()
    failed = 0
    try:
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    check_child()
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            failed += os.waitstatus_to_exitcode(status) != 0
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    sys.exit(failed)
""")


def test_a_child_forked_while_other_threads_use_tapes_can_use_them():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.returncode} children failed:\n{result.stderr[-3000:]}"


TRACED = textwrap.dedent("""
    import math, os, threading, time
    import pyrograd as pg

    entered = threading.Event()

    def slow(v):
        entered.set()
        time.sleep(0.5)  # the call holds the function's lock meanwhile
        return v

    @pg.function
    def f(x):
        return pg.apply(x, "slow", slow, lambda v: 1.0) * 2

    f(1.0)
    entered.clear()
    worker = threading.Thread(target=f, args=(3.0,))
    worker.start()
    entered.wait()
    pid = os.fork()
    if pid == 0:  # the worker thread is gone here, and held f's lock
        try:
            ok = f(4.0) == 8.0
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    worker.join()
    print("child status", status)
    raise SystemExit(0 if status == 0 else 1)
""")


def test_a_child_can_call_a_traced_function_another_thread_was_calling():
    # The child of a fork has none of the parent's other threads: a traced
    # function's lock that one of them held stayed held, and f deadlocked.
    result = subprocess.run([sys.executable, "-c", TRACED], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
