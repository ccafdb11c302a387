"""Item 10: derivative chains that cycle (exp' = exp, and sin -> cos ->
-sin -> -cos -> sin): pg.grad to the sixth order gives the right numbers,
as values and after a set; and such tapes copy and pickle."""
import copy
import math
import pickle

import pyrograd as pg
from _hostile import ok


def neg_sin(v):
    return -math.sin(v)


def neg_cos(v):
    return -math.cos(v)


EXP = pg.unary("exp_u", math.exp, None)
EXP.df = EXP

SIN = pg.unary("sin_u", math.sin, None)
COS = pg.unary("cos_u", math.cos, None)
NSIN = pg.unary("nsin_u", neg_sin, None)
NCOS = pg.unary("ncos_u", neg_cos, None)
SIN.df, COS.df, NSIN.df, NCOS.df = COS, NSIN, NCOS, SIN
SIN_ORDERS = [math.sin, math.cos, neg_sin, neg_cos]


def close(got, want, what):
    assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (what, got, want)


def check(op, orders, x0, x1):
    tape = pg.Tape()
    x = tape.term("x", x0)
    y = op(x)
    terms = [y]
    for k in range(1, 7):
        terms.append(pg.grad(terms[-1], x))
    for x_value in (x0, x1):
        x.set(x_value)
        for k, term in enumerate(terms):
            close(term.value, orders(k, x_value), f"{op.name} order {k} at {x_value}")
            close(term.derive(x), orders(k + 1, x_value), f"{op.name} derive of order {k} at {x_value}")
    for other in (copy.deepcopy(tape), pickle.loads(pickle.dumps(tape))):
        other[0].set(x0)
        for k, term in enumerate(terms):
            close(other[term.index].value, orders(k, x0), f"{op.name} order {k}, copied")
        close(pg.grad(other[terms[-1].index], other[0]).value, orders(7, x0), f"{op.name} order 7, copied")


check(EXP, lambda k, v: math.exp(v), 0.5, -1.25)
check(SIN, lambda k, v: SIN_ORDERS[k % 4](v), 0.5, 2.0)
check(COS, lambda k, v: SIN_ORDERS[(k + 1) % 4](v), 0.3, -1.0)
ok()
