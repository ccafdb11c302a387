"""A chain of 10 million nodes built with operators, and of 100 million
built from arrays (Tape.extend; marked slow): every sweep is a loop, not a
recursion, and the tape holds at most 32 bytes a node.

    y_0 = x,   y_{k+1} = y_k * b + c      (two nodes per step, 5 million steps)

With b = 1 every value and derivative is an integer (or half-integer) below
2**53, so the closed forms below hold exactly:

    y_M       = x + M c
    dy/dc     = M
    dy/dx     = 1
    dy/db     = sum_{k<M} y_k = M x + c M (M - 1) / 2
"""
import gc

import numpy as np
import pytest

import pyrograd as pg
from _pyrograd_core import lib

NODES = 10_000_000
STEPS = NODES // 2


def test_ten_million_node_chain():
    tape = pg.Tape()
    x, b, c = tape.term("x", 0.5), tape.term("b", 1.0), tape.term("c", 1.0)
    y = x
    for _ in range(STEPS):
        y = y * b + c
    assert len(tape) == NODES + 3

    assert y.value == 0.5 + STEPS
    assert y.derive(c) == STEPS
    assert y.derive(x) == 1.0
    assert y.derive(b) == STEPS * 0.5 + STEPS * (STEPS - 1) / 2
    y.backprop()
    assert c.grad == STEPS
    assert x.grad == 1.0
    assert b.grad == STEPS * 0.5 + STEPS * (STEPS - 1) / 2

    # a set at the bottom of the chain re-evaluates all of it
    c.set(2.0)
    x.set(-1.0)
    assert y.value == -1.0 + 2 * STEPS
    y.backprop()
    assert b.grad == -1.0 * STEPS + 2.0 * STEPS * (STEPS - 1) / 2
    assert y.derive(b) == b.grad
    del tape, x, b, c, y
    gc.collect()


# ---- built from arrays: the same chain, 100 million nodes ----------------------------------

def _chain_steps(first, count):
    """The nodes of steps [first, first + count) of the chain above, as extend
    takes them: step s is node 3 + 2s = y_s * b and node 4 + 2s = that + c,
    where y_0 = x (node 0) and y_s (s > 0) is node 2 + 2s."""
    s = np.arange(first, first + count, dtype=np.uint32)
    op = np.empty(2 * count, np.uint8)
    a = np.empty(2 * count, np.uint32)
    b = np.empty(2 * count, np.uint32)
    op[0::2], op[1::2] = MUL, ADD
    a[0::2] = np.where(s == 0, 0, 2 + 2 * s)  # y_s
    a[1::2] = 3 + 2 * s  # the product
    b[0::2], b[1::2] = 1, 2  # b, c
    return op, a, b


MUL, ADD = lib.pg_op_code(b"MUL"), lib.pg_op_code(b"ADD")


def _rss_bytes(field):
    """VmRSS or VmHWM (the peak) of this process, or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


@pytest.mark.parametrize("steps", [
    500_000,
    pytest.param(50_000_000, marks=pytest.mark.slow),  # 100 million nodes
])
def test_chain_built_from_arrays_sweeps_in_32_bytes_a_node(steps):
    gc.collect()
    peak_known = _reset_peak_rss()
    rss_before = _rss_bytes("VmRSS")
    nodes = 3 + 2 * steps
    tape = pg.Tape()
    tape.reserve(nodes)
    tape.extend(["leaf"] * 3, value=[0.5, 1.0, 1.0], names={0: "x", 1: "b", 2: "c"})
    chunk = 1_000_000
    for first in range(0, steps, chunk):
        tape.extend(*_chain_steps(first, min(chunk, steps - first)))
    x, b, c, y = tape[0], tape[1], tape[2], tape[-1]
    assert len(tape) == nodes
    assert tape.memory / len(tape) <= 32

    assert y.value == 0.5 + steps
    y.backprop()
    assert c.grad == steps
    assert x.grad == 1.0
    assert b.grad == steps * 0.5 + steps * (steps - 1) / 2
    if peak_known and rss_before is not None:
        growth = _rss_bytes("VmHWM") - rss_before
        assert growth <= 32 * nodes + 64 * 2**20, f"peak RSS grew {growth / nodes:.1f} bytes a node"

    c.set(2.0)
    x.set(-1.0)
    assert y.value == -1.0 + 2 * steps
    y.backprop()
    assert b.grad == -1.0 * steps + 2.0 * steps * (steps - 1) / 2
    del tape, x, b, c, y
    gc.collect()
