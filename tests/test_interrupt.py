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
