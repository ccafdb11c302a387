"""How long each long call takes to stop after Ctrl-C, on a big tape.

    python bench/interrupt_latency.py [million nodes, default 4] [call ...]

For each call, a SIGALRM whose handler raises KeyboardInterrupt arrives
some time into the call (setitimer; DELAY s for most); the latency is the
time from the signal to the exception.  "pg_interrupt" lines stop the call
from another thread instead.  A call that ends before the signal is
reported as such (make the tape bigger).  The tape is a chain
y = tanh(y * w + x); 20 million nodes take about 1 GB at the peak.
"""
import signal
import sys
import threading
import time

import numpy as np

import pyrograd as pg
from pyrograd._binding import OPS, lib

DELAY = 0.3


def chain(nodes):
    """x, w, then y = tanh(y * w + x) until the tape has `nodes` nodes."""
    k = max((nodes - 2) // 3, 1)
    op = np.empty(2 + 3 * k, np.uint8)
    a = np.zeros(2 + 3 * k, np.uint32)
    b = np.zeros(2 + 3 * k, np.uint32)
    op[:2] = OPS["leaf"]
    i = np.arange(k, dtype=np.uint32) * 3 + 2
    prev = np.concatenate([[0], i[:-1] + 2]).astype(np.uint32)
    op[i], a[i], b[i] = OPS["mul"], prev, 1
    op[i + 1], a[i + 1], b[i + 1] = OPS["add"], i, 0
    op[i + 2], a[i + 2] = OPS["tanh"], i + 1
    return op, a, b


def big_tape(nodes):
    tape = pg.Tape()
    op, a, b = chain(nodes)
    tape.extend(op, a, b, value=np.r_[0.1, 0.5, np.zeros(len(op) - 2)])
    x, w, y = tape[0], tape[1], tape[len(op) - 1]
    return tape, x, w, y


def stop_by_alarm(call, delay):
    """Seconds from a SIGALRM raising KeyboardInterrupt to the exception, or None."""
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, raise_interrupt)
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, delay)
    try:
        call()
    except KeyboardInterrupt:
        return time.perf_counter() - start - delay
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return None


def stop_by_pg_interrupt(tape, call, delay):
    timer = threading.Timer(delay, lib.pg_interrupt, (tape._ptr,))
    start = time.perf_counter()
    timer.start()
    try:
        call()
    except KeyboardInterrupt:
        return time.perf_counter() - start - delay
    finally:
        timer.join()
    return None


def main():
    millions = float(sys.argv[1]) if len(sys.argv) > 1 else 4
    only = set(sys.argv[2:])
    nodes = int(millions * 1e6)
    tape, x, w, y = big_tape(nodes)
    y.value
    rows = np.linspace(-1, 1, 1000).reshape(-1, 1)

    def planning():  # a new plan every call: the rows change
        planning.rows += 1
        tape.eval_batch(y, [x], rows[:planning.rows % 7 + 1], threads=1)
    planning.rows = 0

    arrays = chain(nodes)

    def extend():
        pg.Tape().extend(*arrays)

    def grad_graph():
        pg.grad(y, [x, w])

    # name: (call, seconds into it that the signal comes)
    calls = {
        "eval_batch": (lambda: tape.eval_batch(y, [x], rows, threads=1), DELAY),
        "grad_batch threads=1": (lambda: tape.grad_batch(y, [x], rows, [w], threads=1), DELAY),
        "grad_batch threads=2": (lambda: tape.grad_batch(y, [x], rows, [w], threads=2), DELAY),
        "optimizer.run": (lambda: pg.optim.SGD([w], lr=0.0).run(y, [x], rows[:2], epochs=1000, threads=1), DELAY),
        "batch planning": (planning, DELAY),
        "value": (lambda: (x.set(x.value), y.value), 0.01),
        "derive": (lambda: y.derive(x), 0.01),
        "backprop": (lambda: y.backprop(), 0.01),
        "extend": (extend, 0.02),
        "pg.grad": (grad_graph, DELAY),
    }
    print(f"{nodes / 1e6:g} million nodes; signal {DELAY} s into most calls")
    for name, (call, delay) in calls.items():
        if only and name not in only:
            continue
        latency = stop_by_alarm(call, delay)
        shown = "ended before the signal" if latency is None else f"{latency * 1e3:7.1f} ms"
        print(f"  Ctrl-C       {name:22s} {shown}", flush=True)
        if name.startswith(("eval", "grad_batch", "optimizer")):
            latency = stop_by_pg_interrupt(tape, call, delay)
            shown = "ended before the signal" if latency is None else f"{latency * 1e3:7.1f} ms"
            print(f"  pg_interrupt {name:22s} {shown}", flush=True)


if __name__ == "__main__":
    main()
