"""Signals in Python user functions: an exception from a signal handler
(Ctrl-C's KeyboardInterrupt, or a SIGALRM handler's) that arrives while a
sweep or a batch calls a Python function is raised by the call, and the C
core never uses an output the function did not write.

A signal handler runs between bytecodes, so it may raise as the callback
starts, before its `try`, or while the callback parks another exception.
Such an exception used to escape the cffi callback: cffi printed "Exception
ignored from cffi callback", returned 0, and C used an unwritten output.
"""
import math
import signal
import sys
import time
import traceback

import numpy as np
import pytest

import pyrograd as pg
from pyrograd._binding import OPS

STORM_SECONDS = 1.0  # per test; the old code gave hundreds of wrong values in that
STORM_PERIOD = 0.0002  # a SIGALRM every 200 microseconds


class Alarm(Exception):
    """What the SIGALRM handler raises."""


class Storm:
    """SIGALRM every STORM_PERIOD; the handler raises Alarm while armed.

    Python runs a handler only at a call or a backward jump, so between
    arming and the call, and in the `finally` that disarms, none can hit the
    test's own bookkeeping."""

    def __init__(self):
        self.armed = False

    def handler(self, signum, frame):
        if self.armed:
            raise Alarm()

    def attempt(self, call):
        """call()'s result, or the Alarm that stopped it."""
        try:
            try:
                self.armed = True
                return call()
            finally:
                self.armed = False
        except Alarm as error:
            return error


@pytest.fixture
def storm():
    """A running storm, and every exception Python reported as unraisable."""
    storm = Storm()
    storm.unraisable = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = storm.unraisable.append
    previous = signal.signal(signal.SIGALRM, storm.handler)
    signal.setitimer(signal.ITIMER_REAL, STORM_PERIOD, STORM_PERIOD)
    try:
        yield storm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.unraisablehook = previous_hook


def from_cffi(unraisable):
    """The exceptions cffi printed as "Exception ignored from cffi callback"
    (not those of, say, a gc callback that the storm hit)."""
    return [u for u in unraisable if "cffi" in f"{u.err_msg} {u.object!r}"]


def chain_of_python_functions(n=100):
    """y = x + n, as n Python functions of one step each (derivative 1)."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    y = x
    for _ in range(n):
        y = y.apply("inc", lambda v: v + 1.0, lambda v: 1.0)
    return tape, x, y


def calls(tape, x, y):
    """Each call under test, as (name, run) where run(k) gives whether the
    call got the right answer with the input at k."""
    data = np.array([[1.0], [2.0], [3.0]])
    n = y.value - x.value

    def value(k):
        x.set(k)
        return y.value == k + n

    def derive(k):
        return y.derive(x) == 1.0

    def backprop(k):
        x.set(k)
        y.backprop()
        return x.grad == 1.0

    def eval_batch(threads):
        return lambda k: tape.eval_batch(y, [x], data, threads=threads).tolist() == (data[:, 0] + n).tolist()

    def grad_batch(k):
        total, grads = tape.grad_batch(y, [x], data, [x], threads=2)
        return total == float(np.sum(data + n)) and grads.tolist() == [0.0]  # x is an input: its own value is unused

    return {"value": value, "derive": derive, "backprop": backprop, "eval_batch threads=1": eval_batch(1),
            "eval_batch threads=2": eval_batch(2), "grad_batch threads=2": grad_batch}


# Open (issue #11, item 1): about once in 6 s of storm, a 2-thread grad_batch
# with respect to an input leaf returns grads [3.0] instead of [0.0], with no
# exception (python /tmp-style loop in the closing note of stop 18).  Marked
# so that it shows in every run's summary, not hidden: XPASS when it does not
# happen, XFAIL when it does.
_OPEN = {"grad_batch threads=2": pytest.mark.xfail(
    strict=False, reason="open: a rare wrong grad of an input leaf after a signal in a 2-thread grad_batch")}


@pytest.mark.parametrize("call", [pytest.param(name, marks=_OPEN.get(name, ()))
                                  for name in calls(*chain_of_python_functions(1))])
def test_a_signal_storm_never_gives_a_wrong_value(storm, call):
    """Every call either gives the right answer or raises the handler's
    exception: no wrong number, no exception lost, none printed."""
    run = calls(*chain_of_python_functions())[call]
    right = raised = wrong = 0
    end = time.monotonic() + STORM_SECONDS
    k = 0
    while time.monotonic() < end:
        k += 1
        outcome = storm.attempt(lambda: run(float(k % 50)))
        if isinstance(outcome, Alarm):
            raised += 1
        elif outcome:
            right += 1
        else:
            wrong += 1
    assert wrong == 0, f"{wrong} wrong answers ({right} right, {raised} raised)"
    assert from_cffi(storm.unraisable) == []
    assert raised > 0  # the storm did reach the calls


def test_an_exception_escaping_a_callback_is_raised_by_the_call():
    """A signal that arrives while C runs a long stretch of native nodes is
    handled as the next Python function starts: before its `try`."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    start = len(tape)
    lots = tape.extend(np.full(400_000, OPS["mul"], np.uint8),
                       a=np.arange(start - 1, start + 399_999, dtype=np.uint32), b=np.zeros(400_000, np.uint32))
    y = tape[lots[-1]].apply("inc", lambda v: v + 1.0, lambda v: 1.0)

    def raise_alarm(signum, frame):
        raise Alarm()

    previous = signal.signal(signal.SIGALRM, raise_alarm)
    unraisable = []
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        for _ in range(5):
            x.set(1.0)
            signal.setitimer(signal.ITIMER_REAL, 0.0002)  # during the native nodes
            try:
                y.value
                time.sleep(0.5)  # (the signal came after the call, or was swallowed elsewhere)
            except Alarm as error:
                if "pg_py_callback" in {frame.name for frame in traceback.extract_tb(error.__traceback__)}:
                    break
            assert from_cffi(unraisable) == []  # the old code lost it there, and used an unwritten output
        else:
            pytest.skip("the signal never came during the sweep")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.unraisablehook = previous_hook
    assert from_cffi(unraisable) == []
    assert y.value == 2.0  # x ** 400 001 + 1, and the tape works on


def test_ctrl_c_in_a_derivative_is_not_lost_to_a_retry():
    """derive sweeps again, without the nodes y does not need, after a
    function fails; a KeyboardInterrupt must stop it instead."""
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    calls = []

    def df(v):
        calls.append(v)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return 2.0

    y = x.apply("twice", lambda v: 2 * v, df)
    with pytest.raises(KeyboardInterrupt):
        y.derive(x)
    assert calls == [1.0]
    assert y.derive(x) == 2.0


def test_ctrl_c_in_a_batch_runs_no_rows_again():
    """After a failure a block runs its rows again one at a time, to report
    the first failing row; not after a KeyboardInterrupt."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    seen = []

    def f(v):
        seen.append(v)
        if v == 5.0 and seen.count(5.0) == 1:
            raise KeyboardInterrupt
        return v

    y = x.apply("f", f, lambda v: 1.0)
    with pytest.raises(KeyboardInterrupt):
        tape.eval_batch(y, [x], np.arange(8.0).reshape(-1, 1), threads=1)
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_keyboard_interrupt_on_another_thread_stops_the_whole_batch():
    """A user function raising KeyboardInterrupt in the second thread's
    rows stops the first thread's rows too, at its next function call."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)

    def slow(v):
        if v > 0:
            raise KeyboardInterrupt
        time.sleep(0.001)
        return math.sin(v)

    y = x.apply("slow", slow, math.cos)
    rows = 4000  # the first thread's half: two seconds
    data = np.r_[-np.ones(rows // 2), np.ones(rows // 2)].reshape(-1, 1)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        tape.eval_batch(y, [x], data, threads=2)
    assert time.perf_counter() - start < 0.5
    assert tape.eval_batch(y, [x], -np.ones((4, 1)), threads=2).tolist() == [math.sin(-1.0)] * 4
