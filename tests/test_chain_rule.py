"""The chain rule where it meets 0 * inf: one rule, followed by every mode.

The rule: in the chain rule, a term with an exact zero factor is zero.  A
term adjoint x local partial (reverse) or local partial x tangent (forward)
is 0 when either factor is 0 (+0.0 or -0.0), even when the other is inf or
NaN; otherwise IEEE arithmetic applies.  backprop, derive, pg.grad (and so
pg.hessian and grad of grad), grad_batch and eval_batch of pg.grad graphs
all follow it, and so agree at singular points where they used to give 0 in
one mode and NaN in another (PyTorch gives NaN: it multiplies 0 * inf).

The one difference left is inherent in the two directions: a sum of terms
that cancels to exactly 0 before meeting an infinite factor.  sqrt(x - x):
forward mode sees d(x - x) = 1 - 1 = 0, and 0 * inf = 0 by the rule; reverse
mode sees inf * 1 + inf * (-1) = NaN.  test_cancelling_sum_is_the_one_difference
pins it, and the property test compares forward and reverse mode wherever no
such cancellation happens.
"""
import math

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

import pyrograd as pg

NAN, INF = math.nan, math.inf


def same(a, b, rel=1e-12):
    """a and b agree: both NaN, equal (+0.0 == -0.0, inf == inf), or within rounding."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b) or a == 0 or b == 0:
        return a == b
    return a == pytest.approx(b, rel=rel)


def bits(a):
    """The bits of a, but any NaN is NaN (its sign and payload depend on the
    order of an operation's operands, which vector code may swap)."""
    return "nan" if math.isnan(a) else np.float64(a).tobytes()


def every_mode(tape, leaves, y, point):
    """First derivatives of y by each mode at `point`, and second ones two ways.

    Returns ({mode: [d y / d leaf]}, hessian, grad of grad)."""
    tape.set_values(leaves, np.array(point, dtype=float))
    y.backprop()
    backprop = list(tape.grads(leaves))
    derive = [y.derive(x) for x in leaves]
    grads = pg.grad(y, leaves)
    graph = [g.value for g in grads]
    data = np.array([point], dtype=float)
    batch_rows = list(tape.eval_batch(grads, leaves, data, threads=1)[0])
    _, grad_batch = tape.grad_batch(y, leaves, data, leaves, threads=1)
    tape.set_values(leaves, np.array(point, dtype=float))  # grad_batch leaves grads; values stay
    # the batches give a scalar sweep's bits
    assert [bits(v) for v in batch_rows] == [bits(v) for v in graph]
    assert [bits(v) for v in grad_batch] == [bits(v) for v in backprop]
    firsts = {"backprop": backprop, "derive": derive, "pg.grad": graph}
    hessian = pg.hessian(y, leaves)
    grad_of_grad = [[pg.grad(g, x).value for x in leaves] for g in grads]
    return firsts, hessian, grad_of_grad


def cbrt(x):
    return math.copysign(abs(x) ** (1 / 3), x)


def dcbrt(x):
    """inf at 0, where the cube root is vertical."""
    c = cbrt(x)
    return 1 / (3 * c * c) if c != 0 else INF


def d2cbrt(x):
    c = cbrt(x)
    return -2 / (9 * x * c * c) if c != 0 else -INF


def root(x):
    return x.apply("cbrt", cbrt, dcbrt, d2cbrt)


# (id, number of leaves, y of the leaves, point, d y / d leaf by the rule)
SINGULAR = [
    # the examples
    ("relu*sqrt at 0", 1, lambda x: pg.relu(x) * pg.sqrt(x), [0.0], [0.0]),
    ("sqrt(x*x) at 0", 1, lambda x: pg.sqrt(x * x), [0.0], [0.0]),
    # x ** y with y = 0: d/dx is 0 for every x; d/dy = x^y log x (0 at x = 0)
    ("x**y, y=0, x=0", 2, lambda x, y: x**y, [0.0, 0.0], [0.0, 0.0]),
    ("x**y, y=0, x=nan", 2, lambda x, y: x**y, [NAN, 0.0], [0.0, NAN]),
    ("x**y, y=0, x=5e-324", 2, lambda x, y: x**y, [5e-324, 0.0], [0.0, math.log(5e-324)]),
    ("x**0, x=0", 1, lambda x: x**0.0, [0.0], [0.0]),
    ("x**0, x=nan", 1, lambda x: x**0.0, [NAN], [0.0]),
    ("x**0, x=5e-324", 1, lambda x: x**0.0, [5e-324], [0.0]),
    ("x**1 at 0", 1, lambda x: x**1.0, [0.0], [1.0]),
    ("x**y, y=1, x=0", 2, lambda x, y: x**y, [0.0, 1.0], [1.0, 0.0]),
    # x log x at 0: log 0 + x * (1/x) = -inf + 0 (PyTorch: -inf + 0 * inf = NaN)
    ("x*log(x) at 0", 1, lambda x: x * pg.log(x), [0.0], [-INF]),
    ("0*log(x) at 0", 1, lambda x: 0.0 * pg.log(x), [0.0], [0.0]),
    ("0*log(x) at -1", 1, lambda x: 0.0 * pg.log(x), [-1.0], [0.0]),
    ("log(x)*0 at 0", 1, lambda x: pg.log(x) * 0.0, [0.0], [0.0]),
    # a node the output does not depend on never poisons it
    ("dead log", 1, lambda x: x + 0.0 * pg.log(x), [0.0], [1.0]),
    # single ops at 0: IEEE where no factor is 0
    ("abs at 0", 1, pg.abs, [0.0], [0.0]),
    ("sqrt at 0", 1, pg.sqrt, [0.0], [INF]),
    ("log at 0", 1, pg.log, [0.0], [INF]),
    ("1/x at 0", 1, lambda x: 1.0 / x, [0.0], [-INF]),
    ("x/y at y=0", 2, lambda x, y: x / y, [1.0, 0.0], [INF, -INF]),
    ("x/y at 0/0", 2, lambda x, y: x / y, [0.0, 0.0], [INF, NAN]),
    ("x/y at 0/5e-324", 2, lambda x, y: x / y, [0.0, 5e-324], [INF, 0.0]),
    # step(0) log 0 + relu(0) / 0 = 0 * -inf + 0 * inf: 0 by the rule
    ("relu(x)*log(x) at 0", 1, lambda x: pg.relu(x) * pg.log(x), [0.0], [0.0]),
    ("abs(x)*sqrt(x) at 0", 1, lambda x: pg.abs(x) * pg.sqrt(x), [0.0], [0.0]),
    # powers of a negative base
    ("x**0.5 at -4", 1, lambda x: x**0.5, [-4.0], [NAN]),
    ("x**3 at -2", 1, lambda x: x**3.0, [-2.0], [12.0]),
    ("x**y at (-2, 3)", 2, lambda x, y: x**y, [-2.0, 3.0], [12.0, NAN]),
    ("x**y at (-2, 0.5)", 2, lambda x, y: x**y, [-2.0, 0.5], [NAN, NAN]),
    # ties share the gradient
    ("max tie", 2, pg.maximum, [1.0, 1.0], [0.5, 0.5]),
    ("min tie", 2, pg.minimum, [1.0, 1.0], [0.5, 0.5]),
    ("max(x, x)", 1, lambda x: pg.maximum(x, x), [2.0], [1.0]),
    ("max tie at 0 under sqrt", 2, lambda x, y: pg.sqrt(pg.maximum(x, y)), [0.0, 0.0], [INF, INF]),
    # a user function whose derivative is inf at 0
    ("cbrt at 0", 1, root, [0.0], [INF]),
    ("cbrt(relu(x)) at 0", 1, lambda x: root(pg.relu(x)), [0.0], [0.0]),
    ("relu(cbrt(x)) at 0", 1, lambda x: pg.relu(root(x)), [0.0], [0.0]),
    ("relu(x)*cbrt(x) at 0", 1, lambda x: pg.relu(x) * root(x), [0.0], [0.0]),
    ("0*cbrt(x) at 0", 1, lambda x: 0.0 * root(x), [0.0], [0.0]),
    ("cbrt(x)**2 at 0", 1, lambda x: root(x) ** 2.0, [0.0], [0.0]),
]


@pytest.mark.parametrize("name, n, build, point, expected", SINGULAR, ids=[c[0] for c in SINGULAR])
def test_every_mode_follows_the_rule_at_singular_points(name, n, build, point, expected):
    """backprop, derive, pg.grad, eval_batch of pg.grad and grad_batch give the
    rule's value; pg.hessian equals pg.grad of pg.grad.

    Before the rule, relu(x) * sqrt(x) at 0 gave backprop 0 but derive and
    pg.grad NaN, sqrt(x * x) at 0 backprop NaN but derive 0, and pg.grad of
    x ** y at y = 0 NaN where backprop gave 0."""
    tape = pg.Tape()
    leaves = [tape.term(f"x{k}", 1.0) for k in range(n)]
    y = build(*leaves)
    firsts, hessian, grad_of_grad = every_mode(tape, leaves, y, point)
    for mode, got in firsts.items():
        assert all(same(g, e) for g, e in zip(got, expected)), (mode, got, expected)
    for row_h, row_g in zip(hessian.tolist(), grad_of_grad):
        assert all(same(h, g) for h, g in zip(row_h, row_g)), (hessian, grad_of_grad)


def test_second_derivatives_follow_the_rule():
    """relu(x) * sqrt(x) at 0: the second derivative has the same 0 * inf
    terms one level up (step(x) * 0.5/sqrt(x), relu(x) * d(0.5/sqrt(x))),
    and every way of getting it says 0."""
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    y = pg.relu(x) * pg.sqrt(x)
    g = pg.grad(y, x)
    gg = pg.grad(g, x)
    g.backprop()
    assert (gg.value, x.grad, g.derive(x), pg.hessian(y, x)[0, 0]) == (0.0, 0.0, 0.0, 0.0)
    # and the third, through the graph of the second
    assert pg.grad(gg, x).value == 0.0


def test_the_rule_follows_set():
    """The derivative graphs apply the rule when they run, not only when they
    are built: a graph made at x = 1 gives the rule's 0 after set(0)."""
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    y = pg.relu(x) * pg.sqrt(x)
    g = pg.grad(y, x)
    assert g.value == pytest.approx(1.5)
    x.set(0.0)
    assert g.value == 0.0
    x.set(4.0)
    assert g.value == pytest.approx(3.0)
    # x ** y: the y = 0 case is a run-time one too
    e = tape.term("e", 2.0)
    d = pg.grad(x**e, x)
    x.set(0.0)
    e.set(0.0)
    assert d.value == 0.0


def test_cancelling_sum_is_the_one_difference():
    """sqrt(x - x): derive sees the tangent 1 - 1 = 0 before sqrt's infinite
    partial and gives 0; reverse mode (backprop, pg.grad) meets inf first and
    sums inf - inf = NaN.  A sum that cancels exactly is the documented limit
    of the rule; the two reverse modes still agree with each other."""
    tape = pg.Tape()
    x = tape.term("x", 3.0)
    y = pg.sqrt(x - x)
    y.backprop()
    assert math.isnan(x.grad)
    assert math.isnan(pg.grad(y, x).value)
    assert y.derive(x) == 0.0


def test_batches_follow_the_rule_row_by_row():
    """grad_batch over rows with singular and ordinary points: each row's
    gradient is backprop's (a NaN row makes the sum NaN, a 0 * inf row does
    not); eval_batch of the pg.grad graph gives pg.grad's values."""
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    y = pg.relu(x) * pg.sqrt(x) + pg.sqrt(x * x)
    g = pg.grad(y, x)
    points = [0.0, 4.0, -1.0, 0.0, 2.25, 1e-300, 0.0, 9.0] * 3
    data = np.array(points).reshape(-1, 1)
    rows = tape.eval_batch([g], [x], data, threads=1)[:, 0]
    total = 0.0
    for p, row in zip(points, rows):
        x.set(p)
        y.backprop()
        assert bits(row) == bits(g.value)
        assert same(row, x.grad)
        total += x.grad
    assert not math.isnan(total)
    _, grads = tape.grad_batch(y, [x], data, [x], threads=1)
    assert bits(grads[0]) == bits(total)
    # rows in blocks of one: the 0 * inf rows are blocks of their own
    for p in points:
        _, grads = tape.grad_batch(y, [x], np.array([[p]]), [x], threads=1)
        x.set(p)
        y.backprop()
        assert bits(grads[0]) == bits(x.grad)
    _, grads = tape.grad_batch(y, [x], data, [x], threads=2)
    assert grads[0] == pytest.approx(total, rel=1e-12)
    # a NaN row makes the sum NaN, before or after a 0 * inf row
    for rows in ([math.nan, 0.0, 4.0], [4.0, 0.0, math.nan], [0.0, math.nan]):
        _, grads = tape.grad_batch(y, [x], np.array(rows).reshape(-1, 1), [x], threads=1)
        assert math.isnan(grads[0])


# ---- random graphs ---------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, -2.0, 0.5, 3.0, INF, -INF, NAN]
UNARY = ["relu", "sqrt", "log", "abs", "sin", "tanh", "neg"]
BINARY = ["add", "sub", "mul", "div", "max", "min", "pow"]
POWERS = [0.0, 1.0, 2.0, 0.5, -1.0, 3.0]


@st.composite
def graphs(draw):
    """(spec, leaf values): 2 leaves, then up to 12 nodes on earlier ones."""
    spec = [("leaf",), ("leaf",)]
    for _ in range(draw(st.integers(1, 12))):
        n = len(spec)
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        kind = draw(st.sampled_from(["unary", "binary", "binary", "powc", "zero"]))
        if kind == "unary":
            spec.append(("unary", draw(st.sampled_from(UNARY)), i))
        elif kind == "binary":
            spec.append(("binary", draw(st.sampled_from(BINARY)), i, j))
        elif kind == "powc":
            spec.append(("powc", i, draw(st.sampled_from(POWERS))))
        else:
            spec.append(("zero", i))  # 0 * node
    return spec, [draw(st.sampled_from(SPECIAL)) for _ in range(2)]


def build(tape, spec):
    leaves = [tape.term("a", 1.0), tape.term("b", 1.0)]
    nodes = list(leaves)
    unary = {"relu": pg.relu, "sqrt": pg.sqrt, "log": pg.log, "abs": pg.abs, "sin": pg.sin,
             "tanh": pg.tanh, "neg": lambda u: -u}
    binary = {"add": lambda u, v: u + v, "sub": lambda u, v: u - v, "mul": lambda u, v: u * v,
              "div": lambda u, v: u / v, "max": pg.maximum, "min": pg.minimum, "pow": lambda u, v: u**v}
    for node in spec[2:]:
        if node[0] == "unary":
            nodes.append(unary[node[1]](nodes[node[2]]))
        elif node[0] == "binary":
            nodes.append(binary[node[1]](nodes[node[2]], nodes[node[3]]))
        elif node[0] == "powc":
            nodes.append(nodes[node[1]] ** node[2])
        else:
            nodes.append(0.0 * nodes[node[1]])
    return leaves, nodes


def partials(node, x, y, v):
    """The local partials of a node of the spec, as the op table gives them."""
    kind = node[0]
    if kind == "zero":
        return [0.0]  # d(0 * u)/du
    if kind == "powc":
        c = node[2]
        return [chain(c, np.power(x, c - 1))]
    op = node[1]
    if kind == "unary":
        return [{"relu": float(x > 0), "sqrt": 0.5 / v, "log": 1 / x, "abs": float(x > 0) - float(x < 0),
                 "sin": np.cos(x), "tanh": 1 - v * v, "neg": -1.0}[op]]
    dmax = lambda p, q: 1.0 if p > q else 0.5 if p == q else 0.0  # noqa: E731
    return {"add": [1.0, 1.0], "sub": [1.0, -1.0], "mul": [y, x], "div": [1 / y, -(v / y)],
            "max": [dmax(x, y), dmax(y, x)], "min": [dmax(y, x), dmax(x, y)],
            "pow": [chain(y, np.power(x, y - 1)), 0.0 if x == 0 else v * np.log(x)]}[op]


def operands_of(node):
    kind = node[0]
    if kind == "leaf":
        return []
    if kind == "unary":
        return [node[2]]
    if kind == "binary":
        return [node[2], node[3]]
    return [node[1]]  # powc, zero


def chain(g, d):
    """The rule."""
    return 0.0 if g == 0 or d == 0 else g * d


class Ambiguous(Exception):
    """The two directions may differ: a sum cancelled (to 0, or inf - inf to
    NaN), or a number overflowed.  Otherwise the order does not matter: with
    the rule's 0, (a + b) * c = a * c + b * c and (a * b) * c = a * (b * c)
    hold for 0, inf and NaN as well, up to rounding."""


def add_terms(terms):
    """Sum of chain terms, in order from +0.0; Ambiguous where the order of
    the chain rule's products and sums could change the result."""
    total = np.float64(0.0)
    for t in terms:
        total = total + t
    finite = all(np.isfinite(t) for t in terms)
    if any(t != 0 for t in terms) and total == 0:  # the other order may multiply inf by 0 or by these
        raise Ambiguous
    if finite and not np.isfinite(total):  # overflow
        raise Ambiguous
    if np.isnan(total) and not any(np.isnan(t) for t in terms):  # inf - inf: the other order may keep inf
        raise Ambiguous
    return total


def product(g, d):
    p = chain(g, d)
    if np.isfinite(g) and np.isfinite(d) and (not np.isfinite(p) or g != 0 and d != 0 and p == 0):
        raise Ambiguous
    return p


def forward_and_reverse(spec, values, seed):
    """The rule's derivative d out / d leaf `seed` forward (tangents) and in
    reverse (adjoints), from the tape's own values; Ambiguous as above."""
    n = len(spec)
    operands = [operands_of(node) for node in spec]
    values = [np.float64(v) for v in values]  # IEEE division: 1 / 0.0 is inf

    def local(k):
        ops = operands[k]
        x = values[ops[0]]
        y = values[ops[1]] if len(ops) > 1 else 0.0
        return partials(spec[k], x, y, values[k])

    with np.errstate(all="ignore"):
        tangent = [np.float64(0.0)] * n
        tangent[seed] = np.float64(1.0)
        for k in range(2, n):
            tangent[k] = add_terms([product(tangent[o], d) for o, d in zip(operands[k], local(k))
                                    if tangent[o] != 0])
        terms = [[] for _ in range(n)]
        terms[n - 1].append(np.float64(1.0))
        for k in range(n - 1, 1, -1):
            adjoint = add_terms(terms[k]) if terms[k] else 0.0
            if adjoint == 0:
                continue
            for o, d in zip(operands[k], local(k)):
                terms[o].append(product(adjoint, d))
        reverse = add_terms(terms[seed]) if terms[seed] else np.float64(0.0)
    return float(tangent[n - 1]), float(reverse)


@given(graphs())
def test_modes_agree_on_random_graphs_with_special_values(case):
    """Random graphs at leaves among 0, -0, inf, -inf and NaN: backprop,
    pg.grad, eval_batch of pg.grad and grad_batch agree (batches to the bit),
    pg.hessian equals pg.grad of pg.grad, and derive agrees with them
    wherever no chain-rule sum cancels exactly (see the module's docstring),
    every mode giving the rule's value, worked out here in Python."""
    spec, point = case
    note(f"spec={spec} point={point}")
    tape = pg.Tape()
    leaves, nodes = build(tape, spec)
    y = nodes[-1]
    firsts, hessian, grad_of_grad = every_mode(tape, leaves, y, point)
    for mode in ("pg.grad",):
        assert all(same(a, b) for a, b in zip(firsts[mode], firsts["backprop"])), firsts
    for row_h, row_g in zip(hessian.tolist(), grad_of_grad):
        assert all(same(h, g) for h, g in zip(row_h, row_g)), (hessian, grad_of_grad)
    values = [t.value for t in nodes]
    for k in range(2):
        try:
            forward, reverse = forward_and_reverse(spec, values, k)
        except Ambiguous:
            event("a sum cancelled or a number overflowed: the directions may differ")
            continue
        assert same(firsts["backprop"][k], reverse, rel=1e-9), (k, firsts, reverse)
        assert same(firsts["derive"][k], forward, rel=1e-9), (k, firsts, forward)
        assert same(forward, reverse, rel=1e-9)
        event("compared forward and reverse")
