"""Threads: separate tapes in parallel, and one tape shared by many threads.

cffi releases the GIL around every C call but the few that only build a
node or peek at a value (csrc/build_ffi.py), so tapes driven from separate
Python threads run at the same time and must give the single-thread results
exactly.  A tape used by two threads at once is never corrupted: each C call
takes the tape's busy flag, and a call that finds it taken raises
TapeBusyError without touching the tape.
"""
import math
import pathlib
import random
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import pyrograd as pg
from _pyrograd_core import lib


def build_model(seed):
    """A small network on a tape of its own, and data for it."""
    rng = np.random.default_rng(seed)
    tape = pg.Tape()
    xs = [tape.term(f"x{k}", 0.0) for k in range(3)]
    ws = [tape.term(f"w{k}", float(v)) for k, v in enumerate(rng.normal(size=3))]
    h = pg.tanh(sum((x * w for x, w in zip(xs, ws)), tape.const(0.1)))
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    soft = pg.apply(h, "soft", lambda v: math.log1p(math.exp(v)), sigmoid, lambda v: sigmoid(v) * (1 - sigmoid(v)))
    loss = (soft - 0.5) ** 2
    data = rng.normal(size=(3000, 3))
    return tape, xs, ws, loss, data


def results(seed):
    """Everything a model gives, run from start to end on one thread."""
    tape, xs, ws, loss, data = build_model(seed)
    total, grads = tape.grad_batch(loss, xs, data, ws, threads=1)
    outputs = tape.eval_batch(loss, xs, data[:500], threads=1)
    tape.set_values(xs, data[0])
    loss.backprop()
    dw = tape.grads(ws)
    second = [pg.grad(g, ws[0]).value for g in pg.grad(loss, ws)]
    losses = pg.optim.Adam(ws, lr=0.01).run(loss, xs, data, epochs=5, threads=1)
    return [total, grads.tolist(), outputs.tolist(), dw.tolist(), second, losses.tolist(),
            tape.values(ws).tolist()]


def test_separate_tapes_on_separate_threads_give_the_single_thread_results():
    seeds = list(range(6))
    expected = {seed: results(seed) for seed in seeds}
    got, errors = {}, []

    def work(seed):
        try:
            for _ in range(3):
                got.setdefault(seed, []).append(results(seed))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for seed in seeds:
        assert got[seed] == [expected[seed]] * 3  # exactly, bit for bit


def test_only_the_building_calls_keep_the_gil(tmp_path):
    """The glue as the build makes it: the calls in KEEP_GIL call C directly,
    every other releases the GIL (a cffi that words its wrappers otherwise
    would make build_ffi.py warn, and this fail)."""
    csrc = pathlib.Path(__file__).resolve().parent.parent / "csrc"
    out = tmp_path / "glue.c"
    run = subprocess.run([sys.executable, str(csrc / "build_ffi.py"), str(out)],
                         capture_output=True, text=True, check=True)
    assert "warning" not in run.stderr
    sys.path.insert(0, str(csrc))
    try:
        from build_ffi import KEEP_GIL
    finally:
        sys.path.remove(str(csrc))
    wrappers = dict(re.findall(r"\n_cffi_f_(\w+)\(PyObject \*self, PyObject \*\w+\)\n(\{.*?\n\})",
                               out.read_text(), re.S))
    assert set(KEEP_GIL) <= set(wrappers)
    for name, body in wrappers.items():
        assert ("Py_BEGIN_ALLOW_THREADS" in body) == (name not in KEEP_GIL), name


def test_a_call_in_c_lets_other_python_threads_run():
    """While one thread is inside a long C call, another runs Python code and
    sees the first thread's tape held: the GIL was released."""
    tape, xs, ws, loss, _ = build_model(0)
    loss = pg.tanh(loss)
    for _ in range(200):
        loss = pg.tanh(loss * 0.9 + 0.01)
    data = np.zeros((400_000, 3))
    started, seen_busy = threading.Event(), threading.Event()

    def long_call():
        started.set()
        tape.eval_batch(loss, xs, data, threads=1)

    def watch():
        started.wait()
        # Polls until the tape is seen held or the call has ended.
        while worker.is_alive():
            if lib.pg_size(tape._ptr) == -lib.PG_EBUSY:
                seen_busy.set()
                return

    worker = threading.Thread(target=long_call)
    watcher = threading.Thread(target=watch)
    worker.start()
    watcher.start()
    worker.join()
    watcher.join()
    assert seen_busy.is_set()


def test_many_threads_on_one_tape_never_corrupt_it():
    """Eight threads build, set, read, backprop and run batches on one tape.
    Every call either gives the right answer or raises TapeBusyError."""
    tape = pg.Tape()
    x, w = tape.term("x", 2.0), tape.term("w", -0.5)
    y = pg.tanh(x * w) + x
    data = np.linspace(-1, 1, 400).reshape(-1, 1)
    x0, w0 = 2.0, -0.5
    # The answers, from one thread first.
    y_value = y.value
    y.backprop()
    dy_dw = w.grad
    derived = y.derive(w)
    graph_value = pg.grad(y, w).value
    batch_total, batch_grad = tape.grad_batch(y, [x], data, [w], threads=1)
    batch_values = tape.eval_batch(y, [x], data, threads=1)

    built = []  # (term, expected value) of every node a thread managed to build
    done = [0] * 9  # steps of each kind that succeeded
    busy = [0]
    errors = []
    lock = threading.Lock()

    def expect(condition, what):
        if not condition:
            raise AssertionError(what)

    def step(kind, rng):
        if kind == 0:  # build: x * w + k
            k = float(rng.randrange(100))
            z = x * w + k
            with lock:
                built.append((z, x0 * w0 + k))
        elif kind == 1:
            x.set(x0)  # the same value: makes nodes stale, keeps every answer
        elif kind == 2:
            expect(y.value == y_value, "y.value")
        elif kind == 3:
            y.backprop()  # grads are shared: only check the value read back below
            # another thread's grad_batch may have come in between
            expect(w.grad in (dy_dw, batch_grad[0]), f"w.grad = {w.grad}")
        elif kind == 4:
            total, grad = tape.grad_batch(y, [x], data, [w], threads=1)
            expect(total == batch_total and grad.tolist() == batch_grad.tolist(), "grad_batch")
            tape.set_values([x], np.array([x0]))
        elif kind == 5:
            values = tape.eval_batch(y, [x], data, threads=rng.choice([1, 2]))  # rows alone: exact
            expect(values.tolist() == batch_values.tolist(), "eval_batch")
        elif kind == 6:
            g = pg.grad(y, w)
            expect(g.value == graph_value, "grad graph")
        elif kind == 7:
            expect(y.derive(w) == derived, "derive")
        else:
            expect(tape.values([x, w]).tolist() == [x0, w0], "values")
            expect(len(tape) > 0 and x.name == "x" and not y.is_leaf, "structure")

    def hammer(seed):
        """Steps of random kinds, each tried again while the tape is busy."""
        rng = random.Random(seed)
        for _ in range(200):
            kind = rng.randrange(9)
            for _ in range(10_000):
                try:
                    step(kind, rng)
                except pg.TapeBusyError:
                    with lock:
                        busy[0] += 1
                    time.sleep(0)  # let the holder have the GIL back
                    continue
                except BaseException as error:
                    errors.append(error)
                    return
                with lock:
                    done[kind] += 1
                break

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(done) == 8 * 200 and all(done)
    print(f"\none tape, 8 threads: {sum(done)} steps succeeded, {busy[0]} tries raised TapeBusyError")

    # Afterwards, on one thread: every node built is there and right.
    assert y.value == y_value
    for z, value in built:
        assert z.value == value
    y.backprop()
    assert w.grad == dy_dw
    total, grad = tape.grad_batch(y, [x], data, [w], threads=1)
    assert total == batch_total and grad.tolist() == batch_grad.tolist()
    assert "digraph" in tape.dot()


def test_a_python_function_on_a_worker_thread_calling_back_is_tape_busy():
    """Not a deadlock: the worker's call fails at once, and so does the batch."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    w = x * 2

    def peek(v):
        return v + w.value  # the tape is held by the batch

    y = pg.apply(x, "peek", peek, lambda v: 1.0)
    with pytest.raises(pg.TapeBusyError):
        tape.eval_batch(y, [x], np.zeros((64, 1)), threads=4)
    assert tape.eval_batch(x * 3, [x], np.ones((4, 1)), threads=4).tolist() == [3.0] * 4


# ---- registering user functions while another thread uses the tape ------------------

_REGISTER_WHILE_BUSY = r'''
import copy, gc, pickle, sys, threading, time
import pyrograd as pg
from _pyrograd_core import ffi, lib

class Shifted:  # picklable, and a new object each time
    def __init__(self, k): self.k = k
    def __call__(self, v): return v * v + self.k

def f(v): return v * v
def df(v): return 2 * v
def d2f(v): return 2.0

tape = pg.Tape()
x = tape.term("x", 0.5)
go, entered, release = threading.Event(), threading.Event(), threading.Event()

def blocker(v):  # holds the tape, in the sweep that calls it, until released
    entered.set()
    release.wait(30)
    return v

held = x.apply("blocker", blocker, df)

def sweep():
    go.wait(30)
    while True:
        try:
            return held.value
        except pg.TapeBusyError:
            pass

# Once a registration's first C call has returned, the other thread takes
# the tape before this one makes its next C call.
def between_calls(frame, event, arg):
    name = getattr(arg, "__name__", "")
    if event == "c_return" and name.startswith("pg_fn_") and not go.is_set():
        go.set()
    elif event == "c_call" and name.startswith("pg_") and go.is_set():
        entered.wait(30)

applied, refused = [], 0
for k in range(20):
    x.set(0.5 + k)  # held is stale: reading it sweeps
    go.clear(); entered.clear(); release.clear()
    other = threading.Thread(target=sweep)
    other.start()
    sys.setprofile(between_calls)
    try:
        applied.append((x.apply("sq", Shifted(k), df, d2f), k))
    except pg.TapeBusyError:  # pg_call, or a registration's own call
        refused += 1
    finally:
        sys.setprofile(None)
    assert entered.is_set()
    release.set()
    other.join()

# A thread hammering the tape with sweeps while this one registers.
z = tape.term("z", 0.5)
y = z
for _ in range(300):
    y = y * 0.999 + z
stop = threading.Event()

def hammer():
    k = 0
    while not stop.is_set():
        try:
            z.set(0.5 + (k % 7) * 1e-3)
            y.value
        except pg.TapeBusyError:
            pass
        k += 1

sys.setswitchinterval(1e-6)
thread = threading.Thread(target=hammer)
thread.start()
deadline = time.monotonic() + 10
k = 20
while k < 2000 and time.monotonic() < deadline:
    try:
        applied.append((x.apply("sq", Shifted(k), df, d2f), k))
    except pg.TapeBusyError:
        refused += 1
    k += 1
stop.set()
thread.join()
sys.setswitchinterval(0.005)
applied.append((x.apply("sq", Shifted(k), df, d2f), k))
gc.collect()
print("registered", len(applied), "refused", refused, file=sys.stderr)

# Every C function is one Python recorded, and calls what it recorded.
count = lib.pg_fn_count(tape._ptr)
records = {record[0]: record[1] for record in tape._functions.values()}  # fn: its objects
assert sorted(records) == list(range(count)), f"C has {count} functions, Python recorded {len(records)}"
native, callback, ud = ffi.new("pg_native_fn *"), ffi.new("pg_callback_fn *"), ffi.new("void **")
for fn, objects in records.items():
    for order in range(lib.PG_FN_ORDERS):
        assert lib.pg_fn_get(tape._ptr, fn, order, native, callback, ud) == 0
        if callback[0] != ffi.NULL:
            assert any(ffi.from_handle(ud[0]).func is o for o in objects)
# The tape still copies, pickles and sweeps.
x.set(0.5)
release.set()
copy.deepcopy(tape)
for node, k in applied[::25]:
    assert node.value == 0.25 + k
    assert pg.grad(pg.grad(node, x), x).value == 2.0
y.backprop()
held.backprop()
node, k = pickle.loads(pickle.dumps(applied[-1]))
assert node.value == 0.25 + k and pg.grad(node, node.tape[0]).value == 1.0
print("ok")
'''


def test_registering_a_function_while_another_thread_uses_the_tape_leaves_nothing_behind():
    """apply registered its function in several C calls (pg_fn_new, pg_fn_set
    per order, pg_fn_link): when another thread took the tape between them,
    the new C function stayed, pointing at callback wrappers Python never
    recorded, and the next deepcopy, pickle or sweep aborted the interpreter
    ("from_handle ... garbage").  Registration is one C call now.  First
    another thread is made to take the tape between a registration's first
    C call and its next, 20 times; then it hammers the tape with sweeps
    while this one registers.  In a subprocess: the old code aborts."""
    proc = subprocess.run([sys.executable, "-c", _REGISTER_WHILE_BUSY], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-3000:]}"
    assert proc.stdout.strip() == "ok", proc.stderr[-3000:]
