"""Every op and built-in function: values against math, derivatives against
central finite differences and (where installed) PyTorch in float64."""
import math
import operator
import warnings

import numpy as np
import pytest

import pyrograd as pg

# ---- the ops under test ----------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


# name -> (reference on floats, points away from kinks and poles)
UNARY = {
    "exp": (math.exp, [-1.3, 0.0, 2.1]),
    "log": (math.log, [0.2, 1.0, 3.7]),
    "sqrt": (math.sqrt, [0.25, 2.0, 9.5]),
    "sin": (math.sin, [-2.2, 0.0, 0.9]),
    "cos": (math.cos, [-2.2, 0.0, 0.9]),
    "tan": (math.tan, [-1.2, 0.3, 1.0]),
    "tanh": (math.tanh, [-2.0, 0.1, 1.5]),
    "sigmoid": (_sigmoid, [-4.0, 0.0, 2.5]),
    "relu": (lambda x: max(x, 0.0), [-1.5, 0.7, 3.0]),
    "softplus": (_softplus, [-5.0, 0.0, 3.0]),
    "abs": (math.fabs, [-2.5, 0.4]),
}

# Three ways to build each unary op on a Term.
UNARY_FORMS = {
    "function": lambda name: getattr(pg, name),
    "method": lambda name: (lambda t: getattr(t, name)()),
}

UNARY_CASES = [
    pytest.param(name, form, x, id=f"{name}-{form}-{x}")
    for name, (_, points) in UNARY.items()
    for form in UNARY_FORMS
    for x in points
]

# Operators written with Python syntax (so that both __op__ and __rop__ run).
BINARY = {
    "add": (operator.add, operator.add),
    "sub": (operator.sub, operator.sub),
    "mul": (operator.mul, operator.mul),
    "div": (operator.truediv, operator.truediv),
    "pow": (operator.pow, operator.pow),
    "maximum": (pg.maximum, max),
    "minimum": (pg.minimum, min),
}

# (a, b) points: no ties for max/min, positive base for Term ** Term.
BINARY_POINTS = {
    "add": [(1.7, -0.6), (-3.1, 1.25)],
    "sub": [(1.7, -0.6), (-3.1, 1.25)],
    "mul": [(1.7, -0.6), (-3.1, 1.25)],
    "div": [(1.7, -0.6), (-3.1, 1.25)],
    "pow": [(1.7, -0.6), (0.4, 2.3), (2.5, 1.5)],
    "maximum": [(1.7, -0.6), (-3.1, 1.25)],
    "minimum": [(1.7, -0.6), (-3.1, 1.25)],
}

BINARY_CASES = [
    pytest.param(name, form, a, b, id=f"{name}-{form}-{a}-{b}")
    for name, points in BINARY_POINTS.items()
    for form in ("term-term", "term-number", "number-term")
    for a, b in points
]


def _close(actual, expected, rel=1e-6, abs_=1e-8):
    return math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_)


def _check_derivatives(y, leaves, fd):
    """derive and backprop of y by every leaf agree with finite differences."""
    y.backprop()
    grads = {leaf: leaf.grad for leaf in leaves}
    for leaf in leaves:
        x0 = leaf.value
        numeric = fd(y, leaf, x0)
        derived = y.derive(leaf)
        assert _close(derived, numeric), (leaf.name, derived, numeric)
        assert _close(grads[leaf], numeric), (leaf.name, grads[leaf], numeric)
        assert math.isclose(derived, grads[leaf], rel_tol=1e-13, abs_tol=1e-15)


# ---- unary ---------------------------------------------------------------------

@pytest.mark.parametrize("name, form, x", UNARY_CASES)
def test_unary_value_and_derivatives(name, form, x, fd):
    reference, _ = UNARY[name]
    tape = pg.Tape()
    a = tape.term("a", x)
    y = UNARY_FORMS[form](name)(a)
    assert isinstance(y, pg.Term)
    assert y.tape is tape
    assert math.isclose(y.value, reference(x), rel_tol=1e-14, abs_tol=1e-300)
    _check_derivatives(y, [a], fd)


@pytest.mark.parametrize("x", [-1.5, 0.8])
def test_negation(x, fd):
    tape = pg.Tape()
    a = tape.term("a", x)
    y = -a
    assert y.value == -x
    assert y.derive(a) == -1.0
    y.backprop()
    assert a.grad == -1.0
    _check_derivatives(-(a * a), [a], fd)


def test_builtin_abs_is_the_abs_op():
    tape = pg.Tape()
    a = tape.term("a", -2.5)
    for y in (abs(a), pg.abs(a), a.abs()):
        assert isinstance(y, pg.Term)
        assert y.value == 2.5
        assert y.derive(a) == -1.0


def test_unary_plus_is_identity():
    tape = pg.Tape()
    a = tape.term("a", 3.0)
    assert (+a).value == 3.0
    assert (+a).derive(a) == 1.0


@pytest.mark.parametrize("name", sorted(UNARY))
def test_functions_on_plain_numbers_return_floats(name):
    reference, points = UNARY[name]
    for x in points + [int(points[-1])]:
        result = getattr(pg, name)(x)
        assert type(result) is float
        assert math.isclose(result, reference(float(x)), rel_tol=1e-14, abs_tol=1e-300)


def test_plain_number_functions_follow_ieee_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pg.log(0.0) == -math.inf
        assert math.isnan(pg.sqrt(-1.0))
        assert pg.exp(1000.0) == math.inf
        assert pg.sigmoid(-1000.0) == 0.0
        assert pg.softplus(1000.0) == 1000.0
        assert pg.exp(1.0) == math.e
    assert pg.maximum(2, 3.5) == 3.5 and type(pg.maximum(2, 3.5)) is float
    assert pg.minimum(2, 3.5) == 2.0 and type(pg.minimum(2, 3.5)) is float
    assert pg.maximum(np.float32(1.5), 1) == 1.5


def test_functions_with_numpy_scalar_arguments():
    assert pg.exp(np.float64(0.5)) == math.exp(0.5)
    assert pg.log(np.int64(3)) == math.log(3)


# ---- binary --------------------------------------------------------------------

def _build_binary(name, form, a, b):
    """(tape, y, leaves, expected value) for a op b in the given form."""
    op, reference = BINARY[name]
    tape = pg.Tape()
    if form == "term-term":
        ta, tb = tape.term("a", a), tape.term("b", b)
        return tape, op(ta, tb), [ta, tb], reference(a, b)
    if form == "term-number":
        ta = tape.term("a", a)
        return tape, op(ta, b), [ta], reference(a, b)
    tb = tape.term("b", b)
    return tape, op(a, tb), [tb], reference(a, b)


@pytest.mark.parametrize("name, form, a, b", BINARY_CASES)
def test_binary_value_and_derivatives(name, form, a, b, fd):
    tape, y, leaves, expected = _build_binary(name, form, a, b)
    assert isinstance(y, pg.Term) and y.tape is tape
    assert math.isclose(y.value, expected, rel_tol=1e-15, abs_tol=0.0)
    _check_derivatives(y, leaves, fd)


def test_binary_ops_have_the_right_partials_exactly():
    """Closed forms, not finite differences: d(a op b)/da and /db."""
    tape = pg.Tape()
    a, b = tape.term("a", 3.0), tape.term("b", -4.0)
    cases = [
        (a + b, 1.0, 1.0),
        (a - b, 1.0, -1.0),
        (a * b, -4.0, 3.0),
        (a / b, 1 / -4.0, -3.0 / 16.0),
        (pg.maximum(a, b), 1.0, 0.0),
        (pg.minimum(a, b), 0.0, 1.0),
        (a.maximum(b), 1.0, 0.0),
        (a.minimum(b), 0.0, 1.0),
    ]
    for y, da, db in cases:
        assert (y.derive(a), y.derive(b)) == (da, db)
        y.backprop()
        assert (a.grad, b.grad) == (da, db)


@pytest.mark.parametrize("x", [-3.0, -1.5, 0.0, 2.0])
def test_square_of_any_sign(x):
    tape = pg.Tape()
    a = tape.term("a", x)
    y = a ** 2
    assert y.value == x * x
    assert y.derive(a) == 2 * x
    y.backprop()
    assert a.grad == 2 * x


def test_integer_powers_of_negative_base(fd):
    tape = pg.Tape()
    a = tape.term("a", -1.5)
    y = a ** 3
    assert y.value == -3.375
    assert y.derive(a) == 3 * 2.25
    _check_derivatives(y, [a], fd)
    z = a ** -2
    assert math.isclose(z.value, 1 / 2.25, rel_tol=1e-15)
    assert math.isclose(z.derive(a), -2 * (-1.5) ** -3, rel_tol=1e-15)


def test_powers_at_zero():
    tape = pg.Tape()
    a = tape.term("a", 0.0)
    cases = [(a ** 2, 0.0, 0.0), (a ** 1, 0.0, 1.0), (a ** 3, 0.0, 0.0), (a ** 0, 1.0, 0.0)]
    for y, value, grad in cases:
        assert y.value == value
        assert y.derive(a) == grad
        y.backprop()
        assert a.grad == grad
    half = a ** 0.5
    assert half.value == 0.0
    assert half.derive(a) == math.inf


def test_number_to_the_power_of_a_term():
    tape = pg.Tape()
    x = tape.term("x", 1.5)
    y = 2 ** x
    assert math.isclose(y.value, 2 ** 1.5, rel_tol=1e-15)
    assert math.isclose(y.derive(x), 2 ** 1.5 * math.log(2), rel_tol=1e-14)
    y.backprop()
    assert math.isclose(x.grad, 2 ** 1.5 * math.log(2), rel_tol=1e-14)


def test_term_to_the_power_of_a_term():
    tape = pg.Tape()
    x, p = tape.term("x", 1.7), tape.term("p", 2.3)
    y = x ** p
    assert math.isclose(y.value, 1.7 ** 2.3, rel_tol=1e-15)
    dx, dp = 2.3 * 1.7 ** 1.3, 1.7 ** 2.3 * math.log(1.7)
    assert math.isclose(y.derive(x), dx, rel_tol=1e-14)
    assert math.isclose(y.derive(p), dp, rel_tol=1e-14)
    y.backprop()
    assert math.isclose(x.grad, dx, rel_tol=1e-14)
    assert math.isclose(p.grad, dp, rel_tol=1e-14)


def test_zero_base_term_power_has_zero_exponent_gradient():
    # d/dp 0 ** p is 0 for p > 0 (the limit), as in PyTorch; d/dx = p x^(p-1) = 0.
    tape = pg.Tape()
    x, p = tape.term("x", 0.0), tape.term("p", 2.0)
    y = x ** p
    assert y.value == 0.0
    assert y.derive(p) == 0.0
    assert y.derive(x) == 0.0
    y.backprop()
    assert (x.grad, p.grad) == (0.0, 0.0)


def test_same_operand_on_both_sides():
    tape = pg.Tape()
    x = tape.term("x", 1.3)
    assert (x * x).derive(x) == 2 * 1.3
    assert (x + x).derive(x) == 2.0
    assert (x - x).derive(x) == 0.0
    assert (x / x).derive(x) == 0.0
    assert math.isclose((x ** x).derive(x), 1.3 ** 1.3 * (math.log(1.3) + 1), rel_tol=1e-14)
    assert pg.maximum(x, x).derive(x) == 1.0
    y = pg.minimum(x, x)
    y.backprop()
    assert x.grad == 1.0


@pytest.mark.parametrize("function", [pg.maximum, pg.minimum])
def test_ties_split_the_gradient_evenly(function):
    tape = pg.Tape()
    a, b = tape.term("a", 2.0), tape.term("b", 2.0)
    y = function(a, b)
    assert y.value == 2.0
    assert (y.derive(a), y.derive(b)) == (0.5, 0.5)
    y.backprop()
    assert (a.grad, b.grad) == (0.5, 0.5)
    z = function(a, 2.0)
    assert z.derive(a) == 0.5
    w = function(2, b)
    assert w.derive(b) == 0.5


def test_kinks_follow_pytorch_conventions():
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    assert pg.relu(x).derive(x) == 0.0
    assert abs(x).derive(x) == 0.0


# ---- special values ----------------------------------------------------------------

def test_large_arguments_do_not_overflow():
    tape = pg.Tape()
    x = tape.term("x", -700.0)
    assert math.isclose(pg.sigmoid(x).value, math.exp(-700.0), rel_tol=1e-12)
    assert math.isclose(pg.softplus(x).value, math.exp(-700.0), rel_tol=1e-12)
    assert math.isclose(pg.softplus(x).derive(x), math.exp(-700.0), rel_tol=1e-12)
    x.set(800.0)
    assert pg.sigmoid(x).value == 1.0
    assert pg.sigmoid(x).derive(x) == 0.0
    assert pg.softplus(x).value == 800.0
    assert pg.softplus(x).derive(x) == 1.0
    assert pg.tanh(x).value == 1.0


# ---- numpy scalars -------------------------------------------------------------

def test_numpy_scalars_on_either_side():
    tape = pg.Tape()
    x = tape.term("x", 1.5)
    cases = [
        (np.float64(2.0) * x, 3.0, 2.0),
        (x * np.float32(3), 4.5, 3.0),
        (np.int64(2) + x, 3.5, 1.0),
        (x + np.int32(2), 3.5, 1.0),
        (np.float64(5.0) - x, 3.5, -1.0),
        (x - np.float32(0.5), 1.0, 1.0),
        (np.float64(3.0) / x, 2.0, -3.0 / 2.25),
        (x / np.int64(3), 0.5, 1 / 3),
        (x ** np.int64(2), 2.25, 3.0),
        (x ** np.float64(2.0), 2.25, 3.0),
        (np.float64(2.0) ** x, 2 ** 1.5, 2 ** 1.5 * math.log(2)),
        (pg.maximum(np.float64(1.0), x), 1.5, 1.0),
        (pg.minimum(x, np.float32(1.0)), 1.0, 0.0),
    ]
    for y, value, grad in cases:
        assert type(y) is pg.Term
        assert y.tape is tape
        assert math.isclose(y.value, value, rel_tol=1e-15)
        assert math.isclose(y.derive(x), grad, rel_tol=1e-15)


def test_numpy_scalar_exponent_is_a_constant_not_an_object_array():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    for k in (np.float64(3.0), np.float32(3.0), np.int64(3)):
        y = x ** k
        assert type(y) is pg.Term
        assert y.value == 8.0


# ---- values are never stale ------------------------------------------------------

def test_values_follow_set_on_every_read():
    tape = pg.Tape()
    a, b = tape.term("a", 1.0), tape.term("b", 2.0)
    u = a * b
    y = pg.exp(u) + pg.sin(b) / a
    ref = lambda a_, b_: math.exp(a_ * b_) + math.sin(b_) / a_
    assert math.isclose(y.value, ref(1.0, 2.0), rel_tol=1e-15)
    a.set(0.5)
    assert u.value == 1.0
    assert math.isclose(y.value, ref(0.5, 2.0), rel_tol=1e-15)
    b.set(-1.0)
    # derive without reading the value first: it must use the new values
    assert math.isclose(y.derive(a), -1.0 * math.exp(-0.5) - math.sin(-1.0) / 0.25, rel_tol=1e-14)
    a.set(2.0)
    y.backprop()
    assert math.isclose(b.grad, 2.0 * math.exp(-2.0) + math.cos(-1.0) / 2.0, rel_tol=1e-14)
    assert math.isclose(y.value, ref(2.0, -1.0), rel_tol=1e-15)
    assert math.isclose(u.eval(), -2.0, rel_tol=0)
    assert float(y) == y.value


def test_set_after_derive_and_backprop_recomputes():
    tape = pg.Tape()
    a = tape.term("a", 3.0)
    y = a * a * a
    assert y.derive(a) == 27.0
    y.backprop()
    a.set(2.0)
    assert y.value == 8.0
    a.set(1.0)
    y.backprop()
    assert a.grad == 3.0
    a.set(-1.0)
    assert y.derive(a) == 3.0
    assert y.value == -1.0


def test_set_a_leaf_built_after_other_nodes():
    tape = pg.Tape()
    a = tape.term("a", 2.0)
    y = a * 3
    assert y.value == 6.0
    b = tape.term("b", 1.0)
    z = y + b
    assert z.value == 7.0
    b.set(10.0)
    assert z.value == 16.0
    assert y.value == 6.0
    a.set(1.0)
    assert z.value == 13.0
    assert y.value == 3.0


def test_set_with_int_and_numpy_values():
    tape = pg.Tape()
    a = tape.term("a", np.float32(0.5))
    y = a * 2
    assert y.value == 1.0
    a.set(3)
    assert y.value == 6.0
    a.set(np.float64(-1.25))
    assert y.value == -2.5
    a.set(np.int64(4))
    assert y.value == 8.0


def test_constants_hold_their_value():
    tape = pg.Tape()
    k = tape.const(2.5, name="k")
    a = tape.term("a", 4.0)
    y = k * a
    assert y.value == 10.0
    assert y.derive(a) == 2.5
    assert y.derive(k) == 4.0
    assert k.name == "k"
    assert tape.const(1.0).name is None


# ---- PyTorch in float64 ------------------------------------------------------------

def _torch_unary(torch, name):
    functional = torch.nn.functional
    return {
        "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "sin": torch.sin,
        "cos": torch.cos, "tan": torch.tan, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
        "relu": torch.relu, "softplus": functional.softplus, "abs": torch.abs,
    }[name]


def _torch_value_and_grads(torch, build, values):
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    y = build(*leaves)
    y.backward()
    return y.item(), [leaf.grad.item() if leaf.grad is not None else 0.0 for leaf in leaves]


def _agree(ours, theirs):
    return math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-14)


@pytest.mark.parametrize(
    "name, x",
    [(name, x) for name, (_, points) in UNARY.items() for x in points]
    # kinks: PyTorch's choices at 0 are the convention to match
    + [("relu", 0.0), ("abs", 0.0)],
)
def test_unary_against_pytorch(name, x):
    torch = pytest.importorskip("torch")
    value, (grad,) = _torch_value_and_grads(torch, _torch_unary(torch, name), [x])
    tape = pg.Tape()
    a = tape.term("a", x)
    y = getattr(pg, name)(a)
    assert _agree(y.value, value)
    assert _agree(y.derive(a), grad)
    y.backprop()
    assert _agree(a.grad, grad)


def _torch_binary(torch, name):
    return {
        "add": operator.add, "sub": operator.sub, "mul": operator.mul,
        "div": operator.truediv, "pow": torch.pow,
        "maximum": torch.maximum, "minimum": torch.minimum,
    }[name]


@pytest.mark.parametrize(
    "name, a, b",
    [(name, a, b) for name, points in BINARY_POINTS.items() for a, b in points]
    + [("maximum", 2.0, 2.0), ("minimum", -1.0, -1.0), ("pow", 0.0, 2.0), ("pow", 0.0, 1.0)],
)
def test_binary_against_pytorch(name, a, b):
    torch = pytest.importorskip("torch")
    value, grads = _torch_value_and_grads(torch, _torch_binary(torch, name), [a, b])
    tape = pg.Tape()
    ta, tb = tape.term("a", a), tape.term("b", b)
    y = BINARY[name][0](ta, tb)
    assert _agree(y.value, value)
    assert _agree(y.derive(ta), grads[0]) and _agree(y.derive(tb), grads[1])
    y.backprop()
    assert _agree(ta.grad, grads[0]) and _agree(tb.grad, grads[1])


@pytest.mark.parametrize("x, k", [(-3.0, 2), (-1.5, 3), (0.0, 2), (2.5, 0.5), (1.2, -1.5)])
def test_power_with_number_exponent_against_pytorch(x, k):
    torch = pytest.importorskip("torch")
    value, (grad,) = _torch_value_and_grads(torch, lambda t: t ** k, [x])
    tape = pg.Tape()
    a = tape.term("a", x)
    y = a ** k
    assert _agree(y.value, value)
    assert _agree(y.derive(a), grad)


def test_composite_expression_against_pytorch():
    torch = pytest.importorskip("torch")

    def build(a, b, c, lib):
        u = lib.tanh(a * b - c) + lib.sigmoid(c) * lib.exp(-a)
        v = lib.sqrt(b * b + 1.0) / (1.0 + lib.softplus(a))
        return lib.maximum(u, v) * lib.log(2.0 + lib.sin(b) ** 2) + (2.0 ** c) - lib.relu(a - 0.1) ** 1.5

    class TorchLib:
        tanh, sigmoid, exp, sqrt, log, sin = (torch.tanh, torch.sigmoid, torch.exp, torch.sqrt,
                                              torch.log, torch.sin)
        softplus, relu, maximum = torch.nn.functional.softplus, torch.relu, torch.maximum

    values = [0.7, -1.3, 0.4]
    value, grads = _torch_value_and_grads(torch, lambda a, b, c: build(a, b, c, TorchLib), values)
    tape = pg.Tape()
    leaves = [tape.term(n, v) for n, v in zip("abc", values)]
    y = build(*leaves, pg)
    assert _agree(y.value, value)
    y.backprop()
    for leaf, grad in zip(leaves, grads):
        assert _agree(leaf.grad, grad)
        assert _agree(y.derive(leaf), grad)
