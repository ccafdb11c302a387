"""Property tests: random graphs against a small pure-Python reference.

The reference below evaluates a graph spec with the math module (forward
values) and runs reverse mode over it (adjoints of every node).  Alongside
each value and adjoint it carries a first-order bound on the rounding error
that quantity can have picked up on its way through the graph (errors of
operands times local derivatives, errors of local derivatives from the
second derivatives, plus a couple of ulps per operation).  pyrograd's values,
`derive` and `backprop` must agree with the reference to a small multiple of
that bound: a few ulps where the graph is well conditioned, more only where
cancellation really loses digits.
"""
import math

import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

import pyrograd as pg

UNARY_OPS = ["neg", "abs", "exp", "log", "sqrt", "sin", "cos", "tan", "tanh",
             "sigmoid", "relu", "softplus"]
BINARY_OPS = ["add", "sub", "mul", "div", "pow", "max", "min"]
POWER_CONSTANTS = [2, 3, -1, -2, 0, 1, 0.5, 1.5, 2.5]

EPS = 2.0 ** -52
TINY = 1e-300  # below this, subnormal rounding is not worth modelling
# Allowed difference: this many times the first-order error bound.
K = 32.0


class Skip(Exception):
    """The reference declines these leaf values: a pole, a kink or an overflow
    is too close for a first-order error bound to hold."""


# ---- the reference ----------------------------------------------------------------

def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _well_away(distance, error, what):
    """The operand is far from a singularity compared with its error."""
    if not (distance > 1e-30 and error <= 1e-6 * distance):
        raise Skip(what)


def _kink(x, ex):
    if ex > 0 and abs(x) <= K * ex:
        raise Skip("near a kink")


# Derivatives that are computed from the op's own value, as PyTorch does
# (tanh' = 1 - v*v, sigmoid' = v*(1 - v)), have an absolute rounding error of
# an ulp of 1, not of the (possibly tiny) derivative: the extra error allowed.
ABSOLUTE_DERIVATIVE_ROUNDING = {"tanh": 2 * EPS, "sigmoid": EPS}


def _unary(op, x, ex):
    """(value, f'(x), f''(x), Lipschitz bound for error propagation)."""
    if op == "neg":
        return -x, -1.0, 0.0, 1.0
    if op == "abs":
        _kink(x, ex)
        return abs(x), (1.0 if x > 0 else -1.0 if x < 0 else 0.0), 0.0, 1.0
    if op == "exp":
        if x > 50:
            raise Skip("exp overflow")
        v = math.exp(x)
        return v, v, v, v
    if op == "log":
        _well_away(x, ex, "log pole")
        return math.log(x), 1.0 / x, -1.0 / (x * x), 1.0 / x
    if op == "sqrt":
        _well_away(x, ex, "sqrt pole")
        v = math.sqrt(x)
        return v, 0.5 / v, -0.25 / (x * v), 0.5 / v
    if op == "sin":
        return math.sin(x), math.cos(x), -math.sin(x), 1.0
    if op == "cos":
        return math.cos(x), -math.sin(x), -math.cos(x), 1.0
    if op == "tan":
        c = math.cos(x)
        _well_away(abs(c), ex, "tan pole")
        t = math.tan(x)
        return t, 1.0 / (c * c), 2.0 * t / (c * c), 1.0 / (c * c)
    if op == "tanh":
        sech = 0.0 if abs(x) > 350 else 1.0 / math.cosh(x)
        t = math.tanh(x)
        return t, sech * sech, -2.0 * t * sech * sech, 1.0
    if op == "sigmoid":
        s = _sigmoid(x)
        d = s * (1.0 - s)
        return s, d, d * (1.0 - 2.0 * s), 0.25
    if op == "relu":
        _kink(x, ex)
        return (x if x > 0 else 0.0), (1.0 if x > 0 else 0.0), 0.0, 1.0
    if op == "softplus":
        s = _sigmoid(x)
        return max(x, 0.0) + math.log1p(math.exp(-abs(x))), s, s * (1.0 - s), 1.0
    raise AssertionError(op)


def _pow(x, y):
    try:
        return math.pow(x, y)
    except (OverflowError, ValueError, ZeroDivisionError):
        raise Skip("pow out of range") from None


def _binary(op, x, y, ex, ey, same, y_is_number=False):
    """(value, d/dx, d/dy, error of d/dx, error of d/dy, Lipschitz x, Lipschitz y)."""
    if op == "add":
        return x + y, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0
    if op == "sub":
        return x - y, 1.0, -1.0, 0.0, 0.0, 1.0, 1.0
    if op == "mul":
        return x * y, y, x, ey, ex, abs(y), abs(x)
    if op == "div":
        _well_away(abs(y), ey, "division by ~0")
        dx, dy = 1.0 / y, -x / (y * y)
        edx = ey / (y * y) + EPS * abs(dx)
        edy = ex / (y * y) + 2.0 * abs(dy) * ey / abs(y) + 2 * EPS * abs(dy)
        return x / y, dx, dy, edx, edy, abs(dx), abs(dy)
    if op == "pow":
        integer = float(y).is_integer()
        if not (y_is_number and integer):
            if x < 0:
                raise Skip("real power of a negative base")
            _well_away(x, ex, "power of ~0")
        elif y < 0:
            _well_away(abs(x), ex, "negative power of ~0")
        v = _pow(x, y)
        dx = 0.0 if y == 0 else y * _pow(x, y - 1)
        dxx = 0.0 if y * (y - 1) == 0 else y * (y - 1) * _pow(x, y - 2)
        edx = abs(dxx) * ex + 2 * EPS * abs(dx)
        if y_is_number:
            dy = edy = 0.0
        else:
            lx = math.log(x)
            dy = v * lx
            dxy = _pow(x, y - 1) * (1.0 + y * lx)  # d(dx)/dy = d(dy)/dx
            edx += abs(dxy) * ey
            edy = abs(dxy) * ex + abs(v * lx * lx) * ey + 2 * EPS * abs(dy)
        return v, dx, dy, edx, edy, abs(dx), abs(dy)
    if op in ("max", "min"):
        if not same and abs(x - y) <= K * (ex + ey) and ex + ey > 0:
            raise Skip("near a tie")
        if x == y:
            return x, 0.5, 0.5, 0.0, 0.0, 1.0, 1.0
        first = x > y if op == "max" else x < y
        return (x if first else y), float(first), float(not first), 0.0, 0.0, 1.0, 1.0
    raise AssertionError(op)


def reference(spec, leaf_values):
    """Forward pass of a graph spec.

    Returns (values, value error bounds, partials) where partials[i] lists
    (operand, local derivative, error bound of that derivative).

    spec entries (indices refer to earlier entries):
      ("leaf", k)              the k-th leaf
      ("const", c)
      ("unary", op, i)
      ("binary", op, i, j)     term op term
      ("left", op, i, c)       term op number
      ("right", op, c, i)      number op term
    Raises Skip where the comparison would be ill posed.
    """
    vals, errs, parts = [], [], []
    for node in spec:
        kind = node[0]
        if kind == "leaf":
            v, e, p = float(leaf_values[node[1]]), 0.0, []
        elif kind == "const":
            v, e, p = float(node[1]), 0.0, []
        elif kind == "unary":
            _, op, i = node
            v, d, d2, lip = _unary(op, vals[i], errs[i])
            e = 2 * EPS * abs(v) + lip * errs[i]
            ed = abs(d2) * errs[i] + 2 * EPS * abs(d) + ABSOLUTE_DERIVATIVE_ROUNDING.get(op, 0.0)
            p = [(i, d, ed)]
        elif kind == "binary":
            _, op, i, j = node
            v, dx, dy, edx, edy, lx, ly = _binary(op, vals[i], vals[j], errs[i], errs[j], i == j)
            e = 2 * EPS * abs(v) + lx * errs[i] + ly * errs[j]
            p = [(i, dx, edx), (j, dy, edy)]
        elif kind == "left":
            _, op, i, c = node
            v, dx, _, edx, _, lx, _ = _binary(op, vals[i], float(c), errs[i], 0.0, False, True)
            e = 2 * EPS * abs(v) + lx * errs[i]
            p = [(i, dx, edx)]
        else:
            _, op, c, i = node
            v, _, dy, _, edy, _, ly = _binary(op, float(c), vals[i], 0.0, errs[i], False)
            e = 2 * EPS * abs(v) + ly * errs[i]
            p = [(i, dy, edy)]
        if not (math.isfinite(v) and abs(v) < 1e8):
            raise Skip("value too large")
        if not all(math.isfinite(d) and abs(d) < 1e8 for _, d, _ in p):
            raise Skip("derivative too large")
        vals.append(v)
        errs.append(e)
        parts.append(p)
    return vals, errs, parts


def adjoints(parts, out):
    """Reverse mode from node `out`: (adjoints, their error bounds, ancestors)."""
    n = len(parts)
    adj, err, needed = [0.0] * n, [0.0] * n, [False] * n
    adj[out], needed[out] = 1.0, True
    for i in range(out, -1, -1):
        if not needed[i]:
            continue
        for k, d, ed in parts[i]:
            adj[k] += adj[i] * d
            err[k] += err[i] * abs(d) + abs(adj[i]) * ed + 2 * EPS * abs(adj[i] * d)
            needed[k] = True
    if not all(math.isfinite(a) and abs(a) < 1e100 for a in adj):
        raise Skip("adjoint overflow")
    return adj, err, needed


# ---- random graphs ---------------------------------------------------------------

leaf_value = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)
number = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)


@st.composite
def graphs(draw):
    """A random graph spec over 1-4 leaves, with its leaf values."""
    n_leaves = draw(st.integers(1, 4))
    spec = [("leaf", k) for k in range(n_leaves)]
    positive = [False] * n_leaves  # values that are > 0 by construction
    for _ in range(draw(st.integers(1, 24))):
        n = len(spec)
        # operands mostly among the last few nodes: deep graphs with sharing
        operand = st.one_of(st.integers(max(0, n - 4), n - 1), st.integers(0, n - 1))
        pos_nodes = [i for i in range(n) if positive[i]]
        kind = draw(st.sampled_from(["unary", "unary", "binary", "binary", "left", "right", "const"]))
        if kind == "const":
            c = draw(number)
            spec.append(("const", c))
            positive.append(c > 0)
            continue
        if kind == "unary":
            op = draw(st.sampled_from(UNARY_OPS))
            if op in ("log", "sqrt") and pos_nodes:
                i = draw(st.sampled_from(pos_nodes))
            else:
                if op in ("log", "sqrt"):
                    op = "exp"
                i = draw(operand)
            spec.append(("unary", op, i))
            positive.append(op in ("exp", "sigmoid", "softplus", "sqrt"))
            continue
        op = draw(st.sampled_from(BINARY_OPS))
        if kind == "binary":
            if op == "pow":
                if not pos_nodes:
                    op = "mul"
                    i = draw(operand)
                else:
                    i = draw(st.sampled_from(pos_nodes))
            else:
                i = draw(operand)
            j = draw(operand)
            spec.append(("binary", op, i, j))
            both = positive[i] and positive[j]
            positive.append(
                (op in ("add", "mul", "div", "min") and both)
                or (op == "max" and (positive[i] or positive[j]))
                or (op == "pow" and positive[i])
            )
        elif kind == "left":  # term op number
            if op == "pow":
                c = draw(st.sampled_from(POWER_CONSTANTS))
                i = draw(st.sampled_from(pos_nodes)) if pos_nodes and not float(c).is_integer() else draw(operand)
            else:
                c = draw(number)
                i = draw(operand)
            spec.append(("left", op, i, c))
            positive.append(
                (op in ("add", "mul", "div", "min") and positive[i] and c > 0)
                or (op == "max" and (positive[i] or c > 0))
                or (op == "pow" and (positive[i] or c == 0))
            )
        else:  # number op term
            c = draw(st.floats(0.1, 4.0)) if op == "pow" else draw(number)
            i = draw(operand)
            spec.append(("right", op, c, i))
            positive.append(
                (op in ("add", "mul", "div", "min") and positive[i] and c > 0)
                or (op == "max" and (positive[i] or c > 0))
                or op == "pow"
            )
    values = draw(st.lists(leaf_value, min_size=n_leaves, max_size=n_leaves))
    return spec, values


_PG_UNARY = {
    "neg": lambda t: -t, "abs": abs, "exp": pg.exp, "log": pg.log, "sqrt": pg.sqrt,
    "sin": pg.sin, "cos": pg.cos, "tan": pg.tan, "tanh": pg.tanh, "sigmoid": pg.sigmoid,
    "relu": pg.relu, "softplus": pg.softplus,
}
# Alternate between functions and methods so both spellings get exercised.
_PG_UNARY_METHOD = {name: (lambda name: (lambda t: getattr(t, name)()))(name)
                    for name in UNARY_OPS if name != "neg"}
_PG_BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b,
    "max": pg.maximum, "min": pg.minimum,
}


def build(spec, values):
    """The spec on a new pyrograd tape: (tape, leaves, terms)."""
    tape = pg.Tape()
    terms, leaves = [], []
    for k, node in enumerate(spec):
        kind = node[0]
        if kind == "leaf":
            t = tape.term(f"x{node[1]}", values[node[1]])
            leaves.append(t)
        elif kind == "const":
            t = tape.const(node[1])
        elif kind == "unary":
            table = _PG_UNARY_METHOD if k % 2 and node[1] in _PG_UNARY_METHOD else _PG_UNARY
            t = table[node[1]](terms[node[2]])
        elif kind == "binary":
            t = _PG_BINARY[node[1]](terms[node[2]], terms[node[3]])
        elif kind == "left":
            t = _PG_BINARY[node[1]](terms[node[2]], node[3])
        else:
            t = _PG_BINARY[node[1]](node[2], terms[node[3]])
        terms.append(t)
    return tape, leaves, terms


# ---- comparisons -------------------------------------------------------------------

def check_value(term, expected, error):
    got = term.value
    assert abs(got - expected) <= K * error + TINY, (got, expected, error)


def check_grad(got, expected, error, what):
    assert abs(got - expected) <= K * error + TINY, (what, got, expected, error)


def check_output(spec, leaves, terms, leaf_values, out, wrt_nodes=()):
    """Values, derive and backprop from terms[out] against the reference.
    Returns False when the reference skipped these values."""
    try:
        vals, errs, parts = reference(spec, leaf_values)
        adj, adj_err, needed = adjoints(parts, out)
    except Skip as why:
        event(f"skipped: {why}")
        # pyrograd still answers, without raising: IEEE results, not errors
        terms[out].value
        terms[out].backprop()
        for leaf in leaves:
            terms[out].derive(leaf)
        return False
    for t, v, e in zip(terms, vals, errs):
        check_value(t, v, e)
    leaf_index = [i for i, node in enumerate(spec) if node[0] == "leaf"]
    for i, leaf in zip(leaf_index, leaves):
        check_grad(terms[out].derive(leaf), adj[i], adj_err[i], f"derive by leaf {i}")
    for i in wrt_nodes:
        check_grad(terms[out].derive(terms[i]), adj[i] if i <= out else 0.0,
                   adj_err[i], f"derive by node {i}")
    terms[out].backprop()
    for i, t in enumerate(terms):
        if needed[i]:
            check_grad(t.grad, adj[i], adj_err[i], f"grad of node {i}")
        else:
            assert t.grad == 0.0, f"node {i} is not an ancestor of the output"
    return True


@given(graphs(), st.data())
def test_random_graphs_match_reference(graph, data):
    spec, values = graph
    note(f"spec={spec}\nvalues={values}")
    tape, leaves, terms = build(spec, values)
    out = data.draw(st.one_of(st.just(len(spec) - 1), st.integers(0, len(spec) - 1)), label="out")
    wrt = data.draw(st.lists(st.integers(0, len(spec) - 1), max_size=3), label="wrt")
    checked = check_output(spec, leaves, terms, values, out, wrt)
    event("checked" if checked else "skipped")


actions = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 3), leaf_value),
    st.tuples(st.just("value"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("derive"), st.integers(0, 10 ** 6), st.integers(0, 3)),
    st.tuples(st.just("backprop"), st.integers(0, 10 ** 6)),
)


@given(graphs(), st.lists(actions, min_size=1, max_size=12))
def test_random_set_sequences_never_read_stale_values(graph, steps):
    """set() between reads, in any order: every read matches a fresh
    reference evaluation at the current leaf values."""
    spec, values = graph
    note(f"spec={spec}\nvalues={values}")
    values = list(values)
    tape, leaves, terms = build(spec, values)
    n = len(spec)
    for step in steps:
        what = step[0]
        if what == "set":
            k = step[1] % len(leaves)
            values[k] = step[2]
            leaves[k].set(step[2])
            continue
        out = step[1] % n
        try:
            vals, errs, parts = reference(spec, values)
            adj, adj_err, needed = adjoints(parts, out)
        except Skip:
            event("skipped")
            continue
        if what == "value":
            check_value(terms[out], vals[out], errs[out])
        elif what == "derive":
            k = step[2] % len(leaves)
            i = [j for j, node in enumerate(spec) if node == ("leaf", k)][0]
            check_grad(terms[out].derive(leaves[k]), adj[i], adj_err[i], "derive")
        else:
            terms[out].backprop()
            for i, t in enumerate(terms):
                if needed[i]:
                    check_grad(t.grad, adj[i], adj_err[i], f"grad of node {i}")
                else:
                    assert t.grad == 0.0
        event("checked")


# ---- the reference itself is checked against known answers ---------------------------------

def test_reference_on_rustograd_example():
    spec = [("leaf", 0), ("leaf", 1), ("leaf", 2), ("binary", "add", 0, 1), ("binary", "mul", 3, 2)]
    vals, _, parts = reference(spec, [123.0, 321.0, 42.0])
    adj, _, needed = adjoints(parts, 4)
    assert vals[4] == 18648.0
    assert adj[:3] == [42.0, 42.0, 444.0]
    assert all(needed)


def test_reference_skips_poles():
    with pytest.raises(Skip):
        reference([("leaf", 0), ("unary", "log", 0)], [0.0])
    with pytest.raises(Skip):
        reference([("leaf", 0), ("leaf", 1), ("binary", "div", 0, 1)], [1.0, 0.0])
