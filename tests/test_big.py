"""A chain of 10 million nodes: every sweep is a loop, not a recursion.

    y_0 = x,   y_{k+1} = y_k * b + c      (two nodes per step, 5 million steps)

With b = 1 every value and derivative is an integer (or half-integer) below
2**53, so the closed forms below hold exactly:

    y_M       = x + M c
    dy/dc     = M
    dy/dx     = 1
    dy/db     = sum_{k<M} y_k = M x + c M (M - 1) / 2
"""
import gc

import pyrograd as pg

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
