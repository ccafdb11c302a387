"""Property tests: random graphs against the small pure-Python reference in
reference.py (values, adjoints and a bound on the rounding error of each).
"""
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

import pyrograd as pg
from reference import Skip, adjoints, check_grad, check_value, reference

UNARY_OPS = ["neg", "abs", "exp", "log", "sqrt", "sin", "cos", "tan", "tanh",
             "sigmoid", "relu", "softplus"]
BINARY_OPS = ["add", "sub", "mul", "div", "pow", "max", "min"]
POWER_CONSTANTS = [2, 3, -1, -2, 0, 1, 0.5, 1.5, 2.5]

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
