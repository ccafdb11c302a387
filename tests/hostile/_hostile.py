"""Shared pieces of the hostile programs (tests/hostile/item_*.py).

Each program is run by tests/test_hostile.py in a subprocess of its own; it
prints OK (or SKIP: why) as its last line, and fails by an exception, an
assertion, a non-zero exit, death by a signal or anything on stderr.

PYROGRAD_HOSTILE_SCALE scales the loops (the harness lowers it under the
sanitizers); PYROGRAD_HOSTILE_SLOWDOWN scales the time bounds.
"""
import os
import random
import signal
import sys
import threading
import time

SCALE = float(os.environ.get("PYROGRAD_HOSTILE_SCALE", "1"))
SLOWDOWN = float(os.environ.get("PYROGRAD_HOSTILE_SLOWDOWN", "1"))


def model(depth=300):
    """(tape, x, w, loss): a chain of `depth` tanh(y * w + 0.1) from x, squared."""
    import pyrograd as pg

    tape = pg.Tape()
    x, w = tape.term("x", 0.0), tape.term("w", 0.5)
    y = x
    for _ in range(depth):
        y = pg.tanh(y * w + 0.1)
    return tape, x, w, y * y


def scaled(n, least=1):
    """n loop turns, scaled by PYROGRAD_HOSTILE_SCALE."""
    return max(least, int(n * SCALE))


def ok():
    print("OK", flush=True)
    sys.exit(0)


def skip(why):
    print(f"SKIP: {why}", flush=True)
    sys.exit(0)


def _noop():
    pass


class Storm(Exception):
    """What the storm's signal handler raises (besides KeyboardInterrupt)."""


class SignalStorm:
    """Signals every `interval` seconds (SIGALRM from setitimer, or SIGINT
    from a thread); while armed, the handler raises `error` with
    probability `rate`, so that calls are both interrupted and let through.

    guarded(call) runs call() armed and returns ("value", result) or
    ("raised", exception): the handler's exception cannot escape it.
    """

    def __init__(self, error=Storm, interval=300e-6, rate=0.2, how="alarm", seed=0):
        self.error, self.interval, self.rate, self.how = error, interval, rate, how
        self.random = random.Random(seed)
        self.armed = False
        self.signals = self.raised = 0
        self._stop = threading.Event()

    def _handler(self, signum, frame):
        self.signals += 1
        if self.armed and self.random.random() < self.rate:
            self.raised += 1
            raise self.error("from the storm")

    def __enter__(self):
        if self.how == "alarm":
            self._previous = signal.signal(signal.SIGALRM, self._handler)
            signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)
        else:
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._thread = threading.Thread(target=self._kill, daemon=True)
            self._thread.start()
        return self

    def _kill(self):
        pid = os.getpid()
        while not self._stop.is_set():
            os.kill(pid, signal.SIGINT)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.armed = False
        if self.how == "alarm":
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, self._previous)
        else:
            self._stop.set()
            self._thread.join()
            # Signals already sent run their (disarmed) handler at the next
            # check of the main loop: let them, before Ctrl-C raises again.
            for _ in range(1000):
                _noop()
            signal.signal(signal.SIGINT, self._previous)
        return False

    def guarded(self, call):
        try:
            self.armed = True
            result = call()
            self.armed = False
            return "value", result
        except self.error as error:
            self.armed = False
            return "raised", error
        finally:
            self.armed = False
