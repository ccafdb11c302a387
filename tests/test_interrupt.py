"""Ctrl-C stops a long call: KeyboardInterrupt comes within a fraction of a
second, and the tape is as a failed call leaves it, ready for the next.

Each long call is sized from a short run to take at least 10 seconds; a
SIGINT arrives 0.2 s in, and the call must raise well before it would end.
The bound (2 s) is a correctness bound, not a benchmark.
"""
import math
import os
import signal
import threading
import time

import numpy as np
import pytest

import pyrograd as pg
from _pyrograd_core import ffi, lib
from pyrograd._binding import OPS, PROGRESS_MS

LONG = 10.0  # seconds the interrupted calls would run
BOUND = 2.0  # seconds within which KeyboardInterrupt must arrive


def model(depth=300):
    tape = pg.Tape()
    x, w = tape.term("x", 0.0), tape.term("w", 0.5)
    y = x
    for _ in range(depth):
        y = pg.tanh(y * w + 0.1)
    return tape, x, w, y * y


def rows_for(seconds, run, sample=2000):
    """Rows that `run(rows)` needs to take `seconds`, from a timed sample."""
    start = time.perf_counter()
    run(sample)
    per_row = (time.perf_counter() - start) / sample
    return int(seconds / per_row) + sample


def interrupted_after(call, delay=0.2):
    """Runs call() with a SIGINT sent `delay` s in; returns the seconds until
    KeyboardInterrupt.  Fails if the call ends without one."""
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
        return time.perf_counter() - start
    finally:
        timer.cancel()
        timer.join()


@pytest.fixture(autouse=True)
def default_sigint_handler():
    """Ctrl-C raises KeyboardInterrupt, whatever the test runner installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_stops_a_long_grad_batch(threads):
    tape, x, w, loss = model()
    small = np.linspace(-1, 1, 500).reshape(-1, 1)
    expected = tape.grad_batch(loss, [x], small, [w], threads=threads)
    grads_before = tape.grads([x, w])

    rows = rows_for(LONG, lambda n: tape.grad_batch(loss, [x], np.zeros((n, 1)), [w], threads=threads))
    tape.set_grads([x, w], grads_before)
    data = np.linspace(-1, 1, rows).reshape(-1, 1)
    elapsed = interrupted_after(lambda: tape.grad_batch(loss, [x], data, [w], threads=threads))
    assert elapsed < BOUND

    # the interrupted call left the grads alone, and the tape works
    assert tape.grads([x, w]).tolist() == grads_before.tolist()
    again = tape.grad_batch(loss, [x], small, [w], threads=threads)
    assert again[0] == expected[0] and again[1].tolist() == expected[1].tolist()


def test_ctrl_c_stops_a_long_eval_batch():
    tape, x, w, loss = model()
    small = np.linspace(-1, 1, 500).reshape(-1, 1)
    expected = tape.eval_batch(loss, [x], small, threads=1)
    rows = rows_for(LONG, lambda n: tape.eval_batch(loss, [x], np.zeros((n, 1)), threads=2))
    data = np.zeros((rows, 1))
    assert interrupted_after(lambda: tape.eval_batch(loss, [x], data, threads=2)) < BOUND
    assert tape.eval_batch(loss, [x], small, threads=1).tolist() == expected.tolist()


def test_ctrl_c_stops_a_training_run_which_keeps_its_steps():
    tape, x, w, loss = model(depth=100)
    data = np.linspace(-1, 1, 2000).reshape(-1, 1)
    opt = pg.optim.SGD([w], lr=1e-4)
    epochs = rows_for(LONG, lambda n: pg.optim.SGD([w], lr=0.0).run(loss, [x], data, epochs=n), sample=20)
    assert interrupted_after(lambda: opt.run(loss, [x], data, epochs=epochs)) < BOUND
    steps = opt.steps
    assert 0 < steps < epochs
    # w moved by the steps taken; the tape evaluates at the new w
    check = pg.Tape()
    cx, cw = check.term("x", 0.0), check.term("w", w.value)
    cy = cx
    for _ in range(100):
        cy = pg.tanh(cy * cw + 0.1)
    assert tape.grad_batch(loss, [x], data, [w], threads=1)[0] == check.grad_batch(cy * cy, [cx], data, [cw],
                                                                                    threads=1)[0]


def test_ctrl_c_in_a_python_function_stops_every_thread_of_a_batch():
    """The main thread's rows raise KeyboardInterrupt in the user function;
    the other threads' rows stop at their next block."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)

    def slow_sin(v):
        time.sleep(0.001)
        return math.sin(v)

    y = pg.apply(x, "slow_sin", slow_sin, math.cos)
    rows = int(LONG * 2 / 0.001)  # two threads, a millisecond a row
    elapsed = interrupted_after(lambda: tape.eval_batch(y, [x], np.zeros((rows, 1)), threads=2))
    assert elapsed < BOUND
    assert tape.eval_batch(y, [x], np.full((3, 1), 0.5), threads=2).tolist() == [math.sin(0.5)] * 3


def test_pg_interrupt_from_another_thread():
    tape, x, w, loss = model()
    rows = rows_for(LONG, lambda n: tape.grad_batch(loss, [x], np.zeros((n, 1)), [w], threads=2))
    data = np.zeros((rows, 1))
    timer = threading.Timer(0.2, lib.pg_interrupt, (tape._ptr,))
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt, match="interrupted"):
            tape.grad_batch(loss, [x], data, [w], threads=2)
    finally:
        timer.join()
    assert time.perf_counter() - start < BOUND
    # The request ended with the call it stopped.
    assert tape.grad_batch(loss, [x], data[:10], [w], threads=2)[0] == pytest.approx(10 * loss.value)


def test_the_progress_handler_runs_only_in_long_calls():
    tape, x, w, loss = model(depth=50)
    calls = []

    @ffi.callback("pg_progress_fn")
    def progress(ud):
        calls.append(1)
        return 0

    assert lib.pg_progress_handler(tape._ptr, 1, progress, ffi.NULL) == 0
    # 100 rows x 150 nodes: short, so not even the clock is read
    tape.grad_batch(loss, [x], np.zeros((100, 1)), [w], threads=1)
    loss.backprop()
    assert calls == []
    # 20 000 rows: some 3 million node evaluations, over many milliseconds
    tape.grad_batch(loss, [x], np.zeros((20_000, 1)), [w], threads=1)
    assert len(calls) >= 1


def test_a_progress_handler_that_returns_non_zero_stops_the_call():
    tape, x, w, loss = model(depth=50)
    expected = tape.grad_batch(loss, [x], np.zeros((10, 1)), [w], threads=1)

    @ffi.callback("pg_progress_fn")
    def stop(ud):
        return 42

    assert lib.pg_progress_handler(tape._ptr, 1, stop, ffi.NULL) == 0
    data = np.zeros((200_000, 1))
    n_x, n_w = ffi.new("uint32_t[]", [x.index]), ffi.new("uint32_t[]", [w.index])
    total, grads = ffi.new("double *"), ffi.new("double[1]")
    rc = lib.pg_grad_batch(tape._ptr, loss.index, -1, n_x, 1, ffi.from_buffer("double[]", data), len(data), n_w, 1,
                           0, 1, total, grads)
    assert rc == lib.PG_EINTERRUPT
    assert lib.pg_callback_code(tape._ptr) == 42
    assert lib.pg_progress_handler(tape._ptr, 1, ffi.NULL, ffi.NULL) == 0
    assert tape.grad_batch(loss, [x], np.zeros((10, 1)), [w], threads=1)[0] == expected[0]


def test_a_progress_handler_stops_long_scalar_sweeps():
    """value, derive and backprop of a long chain check between chunks of
    nodes; a stopped backprop leaves no half-made grads."""
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    y = x
    for _ in range(1_000_000):  # two million nodes: many milliseconds a sweep
        y = y * 1.0000001
    waited = []

    @ffi.callback("pg_progress_fn")
    def stop(ud):
        waited.append(1)
        return 7

    assert lib.pg_progress_handler(tape._ptr, 1, stop, ffi.NULL) == 0
    out = ffi.new("double *")
    assert lib.pg_value(tape._ptr, y.index, out) == lib.PG_EINTERRUPT
    assert lib.pg_callback_code(tape._ptr) == 7
    assert lib.pg_progress_handler(tape._ptr, 1, ffi.NULL, ffi.NULL) == 0
    value = y.value  # the chunks evaluated before the stop are kept; the rest now
    assert value == pytest.approx(1.0000001 ** 1_000_000)

    assert lib.pg_progress_handler(tape._ptr, 1, stop, ffi.NULL) == 0
    assert lib.pg_backprop(tape._ptr, y.index) == lib.PG_EINTERRUPT
    assert lib.pg_derive(tape._ptr, y.index, x.index, out) == lib.PG_EINTERRUPT
    assert lib.pg_progress_handler(tape._ptr, 1, ffi.NULL, ffi.NULL) == 0
    assert x.grad == 0.0 and y.grad == 0.0
    y.backprop()
    assert x.grad == pytest.approx(1.0000001 ** 1_000_000) and y.derive(x) == pytest.approx(x.grad)
    assert len(waited) == 3


def test_ctrl_c_while_the_calling_thread_waits_for_the_others():
    """The calling thread's share ends at once; it then waits for the other
    thread, and runs the progress handler meanwhile: Python runs the
    handler of Ctrl-C on the main thread only."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)

    def slow_for_positive(v):
        if v > 0:
            time.sleep(0.001)
        return math.sin(v)

    y = pg.apply(x, "slow", slow_for_positive, math.cos)
    rows = int(LONG / 0.001)
    data = np.r_[-np.ones(rows), np.ones(rows)].reshape(-1, 1)  # the second half is the other thread's
    assert interrupted_after(lambda: tape.eval_batch(y, [x], data, threads=2)) < BOUND
    assert tape.eval_batch(y, [x], data[-3:], threads=2).tolist() == [math.sin(1.0)] * 3


# ---- big tapes: planning, a row of a big plan, derivative graphs, imports ------

BIG = 2_000_000  # nodes: a plan of them takes a few hundred MB


def chain(nodes):
    """op, a, b of x, w, then y = tanh(y * w + x) up to `nodes` nodes."""
    k = (nodes - 2) // 3
    op, a, b = np.empty(2 + 3 * k, np.uint8), np.zeros(2 + 3 * k, np.uint32), np.zeros(2 + 3 * k, np.uint32)
    op[:2] = OPS["leaf"]
    i = np.arange(k, dtype=np.uint32) * 3 + 2
    op[i], a[i], b[i] = OPS["mul"], np.r_[0, i[:-1] + 2], 1
    op[i + 1], a[i + 1], b[i + 1] = OPS["add"], i, 0
    op[i + 2], a[i + 2] = OPS["tanh"], i + 1
    return op, a, b


@pytest.fixture(scope="module")
def big():
    """A tape of BIG nodes: (tape, x, w, y), evaluated."""
    tape = pg.Tape()
    op, a, b = chain(BIG)
    tape.extend(op, a, b, value=np.r_[0.1, 0.5, np.zeros(len(op) - 2)])
    x, w, y = tape[0], tape[1], tape[len(op) - 1]
    y.value
    return tape, x, w, y


def stop_after_1_ms(tape):
    """Gives tape a progress handler that stops the call at its first look,
    1 ms in; returns the handler, to be kept alive."""
    @ffi.callback("pg_progress_fn")
    def stop(ud):
        return 7

    assert lib.pg_progress_handler(tape._ptr, 1, stop, ffi.NULL) == 0
    return stop


def ctrl_c_latency(call, delay=0.05):
    """Seconds from a SIGALRM raising KeyboardInterrupt, `delay` s into
    call(), to the exception."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        # A call that ended before the signal came (a loaded machine, a
        # sanitized build) tells nothing: again, with the signal sooner.
        for _attempt in range(5):
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, delay)
            try:
                call()
            except KeyboardInterrupt:
                return time.perf_counter() - start - delay
            signal.setitimer(signal.ITIMER_REAL, 0)
            delay /= 4
        pytest.fail("the call always ended before the signal")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_progress_handler_stops_planning_and_a_row_of_a_big_plan(big):
    """A batch of one row on a tape of millions of nodes: planning it and
    running its one block each take many milliseconds."""
    tape, x, w, y = big
    handler = stop_after_1_ms(tape)
    idx = ffi.new("uint32_t[]", [x.index])
    out, result = ffi.new("uint32_t[]", [y.index]), ffi.new("double[1]")
    one_row = ffi.new("double[1]", [0.25])
    try:
        assert lib.pg_eval_batch(tape._ptr, out, 1, idx, 1, one_row, 1, 1, result) == lib.PG_EINTERRUPT
        assert lib.pg_callback_code(tape._ptr) == 7
        w_idx, total, grads = ffi.new("uint32_t[]", [w.index]), ffi.new("double *"), ffi.new("double[1]")
        for threads in 1, 2:
            assert lib.pg_grad_batch(tape._ptr, y.index, -1, idx, 1, one_row, 1, w_idx, 1, 0, threads, total,
                                     grads) == lib.PG_EINTERRUPT
    finally:  # the handler through which Ctrl-C stops a call, back
        assert lib.pg_progress_handler(tape._ptr, PROGRESS_MS, lib.pg_py_progress, ffi.NULL) == 0
    del handler
    assert tape.eval_batch(y, [x], np.array([[0.1]]), threads=1).tolist() == [y.value]


def test_a_progress_handler_stops_an_import_which_appends_nothing(big):
    tape = pg.Tape()
    handler = stop_after_1_ms(tape)
    op, a, b = chain(BIG)
    n = len(op)
    names = b"x\0w\0"
    try:
        status = lib.pg_import(tape._ptr, n, ffi.from_buffer("uint8_t[]", op), ffi.from_buffer("uint32_t[]", a),
                               ffi.from_buffer("uint32_t[]", b), ffi.NULL, 2, ffi.new("uint32_t[]", [0, 1]), names,
                               len(names))
    finally:
        assert lib.pg_progress_handler(tape._ptr, PROGRESS_MS, lib.pg_py_progress, ffi.NULL) == 0
    del handler
    assert status == lib.PG_EINTERRUPT
    assert len(tape) == 0 and tape.to_arrays()["names"] == {}
    tape.extend(op, a, b, value=np.r_[0.1, 0.5, np.zeros(n - 2)], names={0: "x", 1: "w"})
    assert len(tape) == n and tape[n - 1].value == big[3].value


def test_a_progress_handler_stops_a_derivative_graph_which_appends_nothing():
    tape = pg.Tape()
    op, a, b = chain(BIG // 4)
    tape.extend(op, a, b, value=np.r_[0.1, 0.5, np.zeros(len(op) - 2)])
    x, w, y = tape[0], tape[1], tape[len(op) - 1]
    handler = stop_after_1_ms(tape)
    out = ffi.new("uint32_t[2]")
    try:
        status = lib.pg_grad_graph(tape._ptr, y.index, ffi.new("uint32_t[]", [x.index, w.index]), 2, out)
    finally:
        assert lib.pg_progress_handler(tape._ptr, PROGRESS_MS, lib.pg_py_progress, ffi.NULL) == 0
    del handler
    assert status == lib.PG_EINTERRUPT
    assert len(tape) == len(op)
    dy_dx = pg.grad(y, x)
    assert dy_dx.value == pytest.approx(y.derive(x))


@pytest.mark.parametrize("call", ["eval_batch", "grad_batch threads=1", "grad_batch threads=2", "optimizer.run",
                                  "pg.grad", "extend"])
def test_ctrl_c_stops_a_call_on_a_big_tape(big, call):
    """Each stops well within a fraction of a second (within 50 ms on an
    idle machine: bench/interrupt_latency.py)."""
    tape, x, w, y = big
    rows = np.linspace(-1, 1, 100).reshape(-1, 1)
    arrays = chain(BIG)
    n = len(tape)
    run = {
        "eval_batch": lambda: tape.eval_batch(y, [x], rows, threads=1),
        "grad_batch threads=1": lambda: tape.grad_batch(y, [x], rows, [w], threads=1),
        "grad_batch threads=2": lambda: tape.grad_batch(y, [x], rows, [w], threads=2),
        "optimizer.run": lambda: pg.optim.SGD([w], lr=0.0).run(y, [x], rows[:2], epochs=100, threads=1),
        "pg.grad": lambda: pg.grad(y, [x, w]),
        "extend": lambda: pg.Tape().extend(*arrays),  # a fresh tape: a try that ended appended there
    }[call]
    assert ctrl_c_latency(run, delay=0.005 if call == "extend" else 0.05) < 0.5
    assert len(tape) == n  # nothing appended
