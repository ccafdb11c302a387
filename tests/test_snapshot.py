"""pickle and deepcopy of a tape that another thread is extending: each is a
consistent snapshot, a prefix of the tape, or raises TapeBusyError."""
import copy
import math
import pickle
import sys
import threading

import numpy as np
import pytest

import pyrograd as pg


@pytest.fixture
def fast_switching():
    """Threads take turns every few microseconds, so that the pickling thread
    is interrupted inside state() many times a snapshot."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


GROWTH = 150  # rounds of appending; snapshots are taken while they run


def _neg_sin(x):
    return -math.sin(x)


def _grow(tape, x, turns, stop, failures):
    """Appends to the tape GROWTH times (or until stop): new functions,
    named leaves, extend.  A round takes a turn: the snapshots give them, so
    that the tape grows while they are taken, not all before the first.

    The new functions are derivatives, f_i' of the f_i applied, which
    pg.grad makes in one C call: apply's registration of a new function
    takes several, and a TapeBusyError between them (from the snapshots)
    leaves a half-made function behind, a registration bug of its own."""
    i = 0
    while i < GROWTH and not stop.is_set():
        if not turns.acquire(timeout=0.01):
            continue
        try:
            y = x.apply(f"f{i}", math.sin, math.cos, _neg_sin)  # registered before: a CALL node
            pg.grad(y, x)  # a new function, f_i', and a node calling it
            leaf = tape.term(f"leaf{i}", float(i))
            n = len(tape)
            tape.extend(["const", "mul", "call"], [0, n, y.index], [0, leaf.index, i % 3],
                        value=[i + 0.5, 0.0, 0.0], names={n: f"k{i}"})
            i += 1
        except pg.TapeBusyError:
            pass  # the pickling thread held the tape: fine, try again
        except Exception as error:  # noqa: BLE001 -- reported by the test
            failures.append(error)
            return


def _function_names(tape):
    return [entry[0] for entry in pg.bulk._function_table(tape, for_pickle=False)[0]]


def _assert_prefix(snapshot, tape, tape_functions):
    """snapshot holds the first len(snapshot) nodes of tape, with their names,
    values and functions."""
    n = len(snapshot)
    mine, theirs = snapshot.to_arrays(), tape.to_arrays(0, n)
    for key in ("op", "a", "b", "value"):
        assert np.array_equal(mine[key], theirs[key]), key
    assert mine["names"] == theirs["names"]
    functions = _function_names(snapshot)
    assert functions == tape_functions[:len(functions)]
    if n:
        assert np.array_equal(snapshot.values(list(snapshot)), tape.values([tape[i] for i in range(n)]))


@pytest.mark.parametrize("take", [
    lambda tape: pickle.loads(pickle.dumps(tape)),
    lambda tape: pickle.loads(pickle.dumps(tape[len(tape) - 1])).tape,
    copy.deepcopy,
], ids=["pickle tape", "pickle term", "deepcopy"])
def test_snapshots_while_another_thread_extends_the_tape(take, fast_switching):
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    for i in range(GROWTH):  # functions 0, 1, 2, ... which the rounds apply
        x.apply(f"f{i}", math.sin, math.cos, _neg_sin)
    stop, failures, turns = threading.Event(), [], threading.Semaphore(10)
    grower = threading.Thread(target=_grow, args=(tape, x, turns, stop, failures))
    grower.start()
    snapshots, busy = [], 0
    try:
        while grower.is_alive():
            try:
                snapshots.append(take(tape))
            except pg.TapeBusyError:
                busy += 1
            turns.release()
    finally:
        stop.set()
        grower.join()
    assert not failures, failures
    sizes = sorted({len(s) for s in snapshots})
    assert len(sizes) > 5, f"{len(snapshots)} snapshots of {sizes} nodes ({busy} found the tape busy)"
    functions = _function_names(tape)
    for snapshot in snapshots:
        _assert_prefix(snapshot, tape, functions)

