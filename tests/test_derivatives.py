"""Derivatives as graphs: pg.grad to any order, pg.jacobian, pg.hessian.

Every built-in op's first and second derivatives are checked against central
finite differences of pyrograd's own values and, where PyTorch is installed,
against torch double-backward in float64.
"""
import ctypes
import ctypes.util
import importlib.util
import math
import pathlib
import subprocess
import sys

import cffi
import numpy as np
import pytest
from numpy.polynomial import hermite

import pyrograd as pg


def fd(term, leaf, x0, h=1e-5):
    """d term / d leaf at x0 by a central difference, moving the leaf with set()."""
    h = h * max(1.0, abs(x0))
    leaf.set(x0 + h)
    up = term.value
    leaf.set(x0 - h)
    down = term.value
    leaf.set(x0)
    return (up - down) / (2 * h)


def close(a, b, rel=1e-6, abs_=1e-7):
    return a == pytest.approx(b, rel=rel, abs=abs_)


# ---- rust-autograd's values ----------------------------------------------------------


def test_rust_autograd_values():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    y = tape.term("y", 0.5)
    z = 2 * x**2 + 3 * y + 1
    dz_dy = pg.grad(z, y)
    dz_dx = pg.grad(z, x)
    d2z_dx2 = pg.grad(dz_dx, x)
    assert isinstance(dz_dx, pg.Term) and dz_dx.tape is tape
    assert dz_dy.value == 3.0
    assert dz_dx.value == 8.0
    assert d2z_dx2.value == 4.0
    # grad terms are ordinary Terms: they follow set()
    x.set(5.0)
    assert dz_dx.value == 20.0
    assert d2z_dx2.value == 4.0
    assert z.value == 2 * 25 + 1.5 + 1


def test_third_derivative_of_x4():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    for y in (x**4, x * x * x * x, pg.exp(4 * pg.log(x))):
        d3 = pg.grad(pg.grad(pg.grad(y, x), x), x)
        assert d3.value == pytest.approx(48.0, rel=1e-12)
    d3 = pg.grad(pg.grad(pg.grad(x**4, x), x), x)
    d4 = pg.grad(d3, x)
    d5 = pg.grad(d4, x)
    assert (d3.value, d4.value, d5.value) == (48.0, 24.0, 0.0)
    x.set(-1.5)
    assert d3.value == 24 * -1.5


# ---- every op: first and second derivatives ------------------------------------------

# (id, pyrograd expression of x, torch expression of x, points)
UNARY = [
    ("add-number", lambda x: x + 2.5, lambda x: x + 2.5, [-1.3, 0.7]),
    ("number-add", lambda x: 2.5 + x, lambda x: 2.5 + x, [-1.3, 0.7]),
    ("sub-number", lambda x: x - 2.5, lambda x: x - 2.5, [-1.3, 0.7]),
    ("number-sub", lambda x: 2.5 - x, lambda x: 2.5 - x, [-1.3, 0.7]),
    ("mul-number", lambda x: x * 2.5, lambda x: x * 2.5, [-1.3, 0.7]),
    ("number-mul", lambda x: 2.5 * x, lambda x: 2.5 * x, [-1.3, 0.7]),
    ("numpy-mul", lambda x: np.float64(2.5) * x, lambda x: 2.5 * x, [-1.3, 0.7]),
    ("div-number", lambda x: x / 2.5, lambda x: x / 2.5, [-1.3, 0.7]),
    ("number-div", lambda x: 2.5 / x, lambda x: 2.5 / x, [-1.3, 0.7]),
    ("pow2", lambda x: x**2, lambda x: x**2, [-1.3, 0.7]),
    ("pow3", lambda x: x**3, lambda x: x**3, [-1.3, 0.7]),
    ("pow-half", lambda x: x**0.5, lambda x: x**0.5, [0.4, 2.2]),
    ("pow-minus2", lambda x: x**-2, lambda x: x**-2, [-1.3, 0.7]),
    ("number-pow", lambda x: 2**x, lambda x: 2**x, [-1.3, 0.7]),
    ("neg", lambda x: -x, lambda x: -x, [-1.3, 0.7]),
    ("abs", pg.abs, lambda x: x.abs(), [-1.3, 0.7]),
    ("exp", pg.exp, lambda x: x.exp(), [-1.3, 0.7]),
    ("log", pg.log, lambda x: x.log(), [0.4, 2.2]),
    ("sqrt", pg.sqrt, lambda x: x.sqrt(), [0.4, 2.2]),
    ("sin", pg.sin, lambda x: x.sin(), [-1.3, 0.7]),
    ("cos", pg.cos, lambda x: x.cos(), [-1.3, 0.7]),
    ("tan", pg.tan, lambda x: x.tan(), [-1.0, 0.3]),
    ("tanh", pg.tanh, lambda x: x.tanh(), [-1.3, 0.7]),
    ("sigmoid", pg.sigmoid, lambda x: x.sigmoid(), [-1.3, 0.7]),
    ("relu", pg.relu, lambda x: x.relu(), [-1.3, 0.7]),
    ("softplus", pg.softplus, lambda x: __import__("torch").nn.functional.softplus(x), [-1.3, 0.7]),
    ("maximum-number", lambda x: pg.maximum(x, 0.2), lambda x: x.clamp(min=0.2), [-1.3, 0.7]),
    ("minimum-number", lambda x: pg.minimum(0.2, x), lambda x: x.clamp(max=0.2), [-1.3, 0.7]),
    ("method-exp", lambda x: x.exp(), lambda x: x.exp(), [0.7]),
    ("composite", lambda x: pg.sin(x * x) / (1 + pg.exp(-x)), lambda x: (x * x).sin() / (1 + (-x).exp()), [-1.3, 0.7]),
]

# (id, pyrograd expression of x and y, torch expression, points (x, y))
BINARY = [
    ("add", lambda x, y: x + y, lambda x, y: x + y, [(-1.3, 0.4), (0.7, 2.0)]),
    ("sub", lambda x, y: x - y, lambda x, y: x - y, [(-1.3, 0.4), (0.7, 2.0)]),
    ("mul", lambda x, y: x * y, lambda x, y: x * y, [(-1.3, 0.4), (0.7, 2.0)]),
    ("div", lambda x, y: x / y, lambda x, y: x / y, [(-1.3, 0.4), (0.7, -2.0)]),
    ("pow", lambda x, y: x**y, lambda x, y: x**y, [(1.3, 0.4), (0.7, 2.5), (2.0, -1.5)]),
    ("maximum", pg.maximum, lambda x, y: __import__("torch").maximum(x, y), [(-1.3, 0.4), (0.7, -2.0)]),
    ("minimum", pg.minimum, lambda x, y: __import__("torch").minimum(x, y), [(-1.3, 0.4), (0.7, -2.0)]),
    ("mixed", lambda x, y: pg.sin(x) * y**2 + x / y, lambda x, y: x.sin() * y**2 + x / y, [(0.3, 1.7)]),
]

UNARY_CASES = [pytest.param(f, t, p, id=f"{name}@{p}") for name, f, t, ps in UNARY for p in ps]
BINARY_CASES = [pytest.param(f, t, p, id=f"{name}@{p}") for name, f, t, ps in BINARY for p in ps]


@pytest.mark.parametrize("f, torch_f, x0", UNARY_CASES)
def test_unary_first_and_second_vs_finite_differences(f, torch_f, x0):
    tape = pg.Tape()
    x = tape.term("x", x0)
    y = f(x)
    d1 = pg.grad(y, x)
    d2 = pg.grad(d1, x)
    assert isinstance(d1, pg.Term) and isinstance(d2, pg.Term)
    assert d1.value == pytest.approx(y.derive(x), rel=1e-14, abs=1e-300)
    assert close(d1.value, fd(y, x, x0))
    assert close(d2.value, fd(d1, x, x0))
    # and the values did not move with the finite differences
    assert x.value == x0


@pytest.mark.parametrize("f, torch_f, xy", BINARY_CASES)
def test_binary_partials_vs_finite_differences(f, torch_f, xy):
    tape = pg.Tape()
    x, y = tape.term("x", xy[0]), tape.term("y", xy[1])
    z = f(x, y)
    dx, dy = pg.grad(z, [x, y])
    z.backprop()
    assert (dx.value, dy.value) == pytest.approx((x.grad, y.grad), rel=1e-14)
    assert close(dx.value, fd(z, x, xy[0]))
    assert close(dy.value, fd(z, y, xy[1]))
    dxx, dxy = pg.grad(dx, [x, y])
    dyx, dyy = pg.grad(dy, [x, y])
    assert close(dxx.value, fd(dx, x, xy[0]))
    assert close(dxy.value, fd(dx, y, xy[1]))
    assert close(dyx.value, fd(dy, x, xy[0]))
    assert close(dyy.value, fd(dy, y, xy[1]))
    assert dxy.value == pytest.approx(dyx.value, rel=1e-12, abs=1e-14)


def torch_derivatives(torch_f, *values):
    """(value, first partials, matrix of second partials) by torch double-backward."""
    torch = pytest.importorskip("torch")
    inputs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    out = torch_f(*inputs)
    firsts = torch.autograd.grad(out, inputs, create_graph=True, allow_unused=True)
    firsts = [torch.zeros((), dtype=torch.float64) if g is None else g for g in firsts]
    seconds = []
    for g in firsts:
        if g.requires_grad:
            row = torch.autograd.grad(g, inputs, allow_unused=True)
            seconds.append([0.0 if h is None else h.item() for h in row])
        else:
            seconds.append([0.0] * len(inputs))
    return out.item(), [g.item() for g in firsts], seconds


@pytest.mark.parametrize("f, torch_f, x0", UNARY_CASES)
def test_unary_vs_torch_double_backward(f, torch_f, x0):
    value, (t1,), ((t2,),) = torch_derivatives(torch_f, x0)
    tape = pg.Tape()
    x = tape.term("x", x0)
    y = f(x)
    d1 = pg.grad(y, x)
    d2 = pg.grad(d1, x)
    assert y.value == pytest.approx(value, rel=1e-13)
    assert d1.value == pytest.approx(t1, rel=1e-12, abs=1e-15)
    assert d2.value == pytest.approx(t2, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("f, torch_f, xy", BINARY_CASES)
def test_binary_vs_torch_double_backward(f, torch_f, xy):
    value, firsts, seconds = torch_derivatives(torch_f, *xy)
    tape = pg.Tape()
    x, y = tape.term("x", xy[0]), tape.term("y", xy[1])
    z = f(x, y)
    grads = pg.grad(z, [x, y])
    assert z.value == pytest.approx(value, rel=1e-13)
    assert [g.value for g in grads] == pytest.approx(firsts, rel=1e-12, abs=1e-15)
    for g, row in zip(grads, seconds):
        assert [h.value for h in pg.grad(g, [x, y])] == pytest.approx(row, rel=1e-12, abs=1e-15)


def test_max_min_tie_split_like_torch():
    torch = pytest.importorskip("torch")
    tape = pg.Tape()
    x, y = tape.term("x", 0.5), tape.term("y", 0.5)
    for f, tf in ((pg.maximum, torch.maximum), (pg.minimum, torch.minimum)):
        _, firsts, seconds = torch_derivatives(tf, 0.5, 0.5)
        grads = pg.grad(f(x, y), [x, y])
        assert [g.value for g in grads] == firsts == [0.5, 0.5]
        assert [[h.value for h in pg.grad(g, [x, y])] for g in grads] == seconds


@pytest.mark.parametrize("x0", [-2.0, -0.3, 0.3, 2.0])
def test_relu_and_abs_second_derivatives_are_zero(x0):
    tape = pg.Tape()
    x = tape.term("x", x0)
    relu1 = pg.grad(pg.relu(x), x)
    abs1 = pg.grad(pg.abs(x), x)
    assert relu1.value == (1.0 if x0 > 0 else 0.0)
    assert abs1.value == math.copysign(1.0, x0)
    assert pg.grad(relu1, x).value == 0.0
    assert pg.grad(abs1, x).value == 0.0
    # the step follows set() across the kink
    x.set(-x0)
    assert relu1.value == (1.0 if -x0 > 0 else 0.0)
    assert abs1.value == math.copysign(1.0, -x0)


def test_pow_wrt_exponent_at_zero_base_matches_backprop_and_torch():
    """d/dy x**y at x = 0 is 0 (the limit for y > 0): backprop and torch say so.

    The graph rule was once V_ * log(X_), 0 * -inf = NaN at x = 0, where the
    numeric rule pg_dpow_dy special-cases x == 0; it is now the xlog op, with
    the same special case.  Same for 0 ** y (a constant base)."""
    tape = pg.Tape()
    x, y = tape.term("x", 0.0), tape.term("y", 2.0)
    z = x**y
    z.backprop()
    assert y.grad == 0.0
    assert pg.grad(z, y).value == 0.0
    assert pg.grad(0**y, y).value == 0.0


@pytest.mark.parametrize("x0", [0.0, math.nan, 5e-324])
def test_pow_wrt_base_at_zero_exponent_is_zero_in_every_mode(x0):
    """d/dx x**y at y = 0 is 0 whatever x is, in backprop, derive and pg.grad.

    The graph rule was y * x**(y-1), 0 * inf = NaN where 1/x overflows (x = 0,
    NaN, 5e-324), while the sweeps' rule has a y == 0 case; both are now the
    chain rule's product (pg_chain, the CHAIN op), which is 0 when y is.  The
    second derivatives agree too: pg.hessian with pg.grad of pg.grad."""
    tape = pg.Tape()
    x, y = tape.term("x", x0), tape.term("y", 0.0)
    z = x**y
    z.backprop()
    assert (x.grad, z.derive(x), pg.grad(z, x).value) == (0.0, 0.0, 0.0)
    grads = pg.grad(z, [x, y])
    second = [[pg.grad(g, v).value for v in (x, y)] for g in grads]
    np.testing.assert_array_equal(pg.hessian(z, [x, y]), second)


def test_grad_graph_agrees_with_backprop_on_a_mix_of_every_op():
    tape = pg.Tape()
    a, b, c = tape.term("a", 0.7), tape.term("b", 1.9), tape.term("c", -0.4)
    y = (pg.sin(a * b) + pg.cos(c) * pg.exp(a) - pg.log(b) / pg.sqrt(b) + pg.tan(c) * pg.tanh(a)
         + pg.sigmoid(b - a) * pg.relu(a) + pg.softplus(c) ** 2 + pg.abs(c) * 2 ** a
         + a ** b + pg.maximum(a, c) * pg.minimum(b, c) - (-a) / 3)
    grads = pg.grad(y, [a, b, c])
    for point in ([0.7, 1.9, -0.4], [1.3, 0.6, 0.9], [0.2, 2.5, -1.1]):
        tape.set_values([a, b, c], np.array(point))
        y.backprop()
        assert [g.value for g in grads] == pytest.approx(list(tape.grads([a, b, c])), rel=1e-13)


# ---- the shape of pg.grad's answers --------------------------------------------------


def test_grad_of_a_list_returns_a_list():
    tape = pg.Tape()
    x1, x2 = tape.term("x1", 1.5), tape.term("x2", -2.0)
    y = x1 * x2 + x1
    grads = pg.grad(y, [x1, x2])
    assert isinstance(grads, list) and len(grads) == 2
    assert all(isinstance(g, pg.Term) for g in grads)
    assert [g.value for g in grads] == [-1.0, 1.5]
    assert pg.grad(y, []) == []
    assert [g.value for g in pg.grad(y, [x2, x1, x2])] == [1.5, -1.0, 1.5]


def test_grad_wrt_an_unrelated_term_is_a_zero_term():
    tape = pg.Tape()
    x, u = tape.term("x", 1.5), tape.term("u", 3.0)
    y = x * x
    later = tape.term("later", 7.0)  # built after y
    for other in (u, later):
        g = pg.grad(y, other)
        assert isinstance(g, pg.Term)
        assert g.value == 0.0
        assert pg.grad(g, x).value == 0.0
    assert pg.grad(y, y).value == 1.0


def test_grad_wrt_an_intermediate_node():
    tape = pg.Tape()
    x = tape.term("x", 0.8)
    u = x * x
    y = pg.sin(u) + 3 * u
    dy_du = pg.grad(y, u)  # u is held fixed as a variable
    assert dy_du.value == pytest.approx(math.cos(0.64) + 3, rel=1e-15)
    d2y_du2 = pg.grad(dy_du, u)
    assert d2y_du2.value == pytest.approx(-math.sin(0.64), rel=1e-15)
    dy_dx = pg.grad(y, x)  # through u
    assert dy_dx.value == pytest.approx((math.cos(0.64) + 3) * 1.6, rel=1e-15)
    x.set(1.1)
    assert dy_du.value == pytest.approx(math.cos(1.21) + 3, rel=1e-15)
    # d(dy/du)/dx goes through u
    assert pg.grad(dy_du, x).value == pytest.approx(-math.sin(1.21) * 2.2, rel=1e-14)


# ---- graph size: folding and sharing -------------------------------------------------


def test_eight_derivatives_of_a_gaussian_stay_small():
    tape = pg.Tape()
    x = tape.term("x", 0.6)
    d = pg.exp(-(x**2))
    before = len(tape)
    derivatives = []
    for _ in range(8):
        d = pg.grad(d, x)
        derivatives.append(d)
    added = len(tape) - before
    assert added <= 400, added
    # and they are right: the k-th derivative is (-1)^k H_k(x) exp(-x^2)
    for k, dk in enumerate(derivatives, start=1):
        expected = (-1) ** k * hermite.hermval(0.6, [0] * k + [1]) * math.exp(-0.36)
        assert dk.value == pytest.approx(expected, rel=1e-9)


def test_same_gradient_twice_adds_no_nodes():
    tape = pg.Tape()
    x, y = tape.term("x", 0.6), tape.term("y", 1.2)
    z = pg.exp(-(x**2)) * pg.sin(x * y)
    g1 = pg.grad(z, [x, y])
    n = len(tape)
    g2 = pg.grad(z, [x, y])
    assert len(tape) == n
    assert [g.index for g in g1] == [g.index for g in g2]
    h1 = pg.grad(g1[0], x)
    n = len(tape)
    h2 = pg.grad(g2[0], x)
    assert len(tape) == n and h1.index == h2.index
    # the Hessian builds on the gradient already there
    pg.hessian(z, [x, y])
    pg.hessian(z, [x, y])
    n = len(tape)
    pg.hessian(z, [x, y])
    assert len(tape) == n


def test_constant_folding_keeps_trivial_gradients_tiny():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    pg.grad(x + 1.0, x)  # the constants 0 and 1 now exist
    pg.grad(x * 0.0, x)
    for build, value in ((lambda: x * 3, 3.0), (lambda: x * 1, 1.0), (lambda: x + 0, 1.0),
                         (lambda: 0 + x, 1.0), (lambda: 1 * x, 1.0)):
        y = build()
        n = len(tape)
        g = pg.grad(y, x)
        assert len(tape) == n, "a constant derivative adds no node"
        assert g.value == value
        # a constant: it ignores x and its own derivative is 0 without new nodes
        x.set(-7.0)
        assert g.value == value
        x.set(2.0)
        assert pg.grad(g, x).value == 0.0
        assert len(tape) == n
    # d(x*x)/dx = x + x: one node (1*x and x*1 fold away)
    y = x * x
    n = len(tape)
    g = pg.grad(y, x)
    assert len(tape) - n == 1 and g.value == 4.0
    # on a fresh tape, the whole of d(3x)/dx is at most the constants 0 and 1
    fresh = pg.Tape()
    u = fresh.term("u", 1.0)
    y = u * 3
    n = len(fresh)
    assert pg.grad(y, u).value == 3.0
    assert len(fresh) - n <= 2


def test_no_partials_for_operands_that_do_not_reach_x():
    """Only the partials on a path to x are needed: none towards a constant.

    pg_grad_graph once built the partial for every operand of every node with
    an adjoint, so d(2**x)/dx also built d/d(base) = x * 2**(x-1) (3 dead
    nodes), d(x/2)/dx built -v/2 (2 dead nodes), d(x-0)/dx a -1."""
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    pg.grad(x + 1.0, x)  # the constants 0 and 1 now exist
    # (expression, derivative, nodes it needs: new constants and ops)
    for build, value, needed in ((lambda: x - 0, 1.0, 0),            # 1
                                 (lambda: x / 2, 0.5, 1),            # const 0.5
                                 (lambda: 2 / x, -0.5, 2),           # -(v / x)
                                 (lambda: 2**x, 4 * math.log(2), 1)):  # xlog(2, v) = v log 2
        y = build()
        n = len(tape)
        assert pg.grad(y, x).value == pytest.approx(value, rel=1e-15)
        assert len(tape) - n == needed


# ---- apply, d2f and pg.unary ----------------------------------------------------------


def test_apply_with_d2f_is_twice_differentiable():
    tape = pg.Tape()
    x = tape.term("x", 0.9)
    y = x.apply("mysin", math.sin, math.cos, lambda v: -math.sin(v))
    d1 = pg.grad(y, x)
    d2 = pg.grad(d1, x)
    assert d1.value == math.cos(0.9)
    assert d2.value == -math.sin(0.9)
    assert close(d2.value, fd(d1, x, 0.9))
    x.set(0.2)
    assert d2.value == -math.sin(0.2)
    n = len(tape)
    with pytest.raises(pg.DerivativeError, match=r"mysin.*order 3"):
        pg.grad(d2, x)
    assert len(tape) == n


def test_apply_without_d2f_refuses_a_second_derivative():
    tape = pg.Tape()
    x = tape.term("x", 0.9)
    y = pg.apply(x, "mysin", math.sin, math.cos) * x
    d1 = pg.grad(y, x)
    assert d1.value == pytest.approx(math.cos(0.9) * 0.9 + math.sin(0.9), rel=1e-15)
    n = len(tape)
    with pytest.raises(pg.DerivativeError) as info:
        pg.grad(d1, x)
    assert isinstance(info.value, pg.PyrogradError)
    message = str(info.value)
    assert "mysin" in message and "order 2" in message
    # nothing was left behind, and the tape still works
    assert len(tape) == n
    assert y.value == math.sin(0.9) * 0.9
    assert d1.value == pytest.approx(math.cos(0.9) * 0.9 + math.sin(0.9), rel=1e-15)
    x.set(0.3)
    assert d1.value == pytest.approx(math.cos(0.3) * 0.3 + math.sin(0.3), rel=1e-15)
    assert pg.grad(x * x * x, x).value == pytest.approx(0.27, rel=1e-15)
    with pytest.raises(pg.DerivativeError):  # and again, the same way
        pg.grad(d1, x)
    y.backprop()
    assert x.grad == pytest.approx(d1.value, rel=1e-15)


def test_derivative_not_needed_is_not_an_error():
    """d/dz of d(s(x) z)/dx = s'(x) is s'(x) whatever s'' is: s'' is not needed.

    pg_grad_graph once built the partials of every node that had an adjoint,
    including operands that cannot reach any requested x, and so raised
    DerivativeError for s'' here."""
    tape = pg.Tape()
    x, z = tape.term("x", 0.5), tape.term("z", 2.0)
    y = x.apply("s", math.sin, math.cos) * z
    dy_dx = pg.grad(y, x)  # cos(x) z
    dz = pg.grad(dy_dx, z)  # cos(x): needs no s''
    assert dz.value == pytest.approx(math.cos(0.5), rel=1e-15)


def test_unary_chain_differentiates_to_its_depth():
    op = pg.unary("mysin", math.sin,
                  pg.unary("mycos", math.cos,
                           pg.unary("mynsin", lambda v: -math.sin(v), lambda v: -math.cos(v))))
    assert op(0.5) == math.sin(0.5)
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    d = op(x)
    expected = [math.sin, math.cos, lambda v: -math.sin(v), lambda v: -math.cos(v)]
    for k in range(1, 4):
        previous, d = d, pg.grad(d, x)
        assert d.value == expected[k](0.5)
        assert close(d.value, fd(previous, x, 0.5))
    x.set(1.2)
    assert d.value == -math.cos(1.2)
    n = len(tape)
    with pytest.raises(pg.DerivativeError, match=r"order \d") as info:
        pg.grad(d, x)
    assert "mynsin" in str(info.value)
    assert len(tape) == n
    # the same op on a second tape
    other = pg.Tape()
    u = other.term("u", 0.1)
    assert pg.grad(pg.grad(op(u), u), u).value == -math.sin(0.1)


def test_unary_chain_matches_finite_differences():
    op = pg.unary("g", lambda v: math.exp(-v * v),
                  pg.unary("g1", lambda v: -2 * v * math.exp(-v * v),
                           lambda v: (4 * v * v - 2) * math.exp(-v * v)))
    tape = pg.Tape()
    x = tape.term("x", 0.7)
    y = op(x) * x
    d1 = pg.grad(y, x)
    d2 = pg.grad(d1, x)
    assert close(d1.value, fd(y, x, 0.7))
    assert close(d2.value, fd(d1, x, 0.7))


def test_unary_as_d2f():
    tape = pg.Tape()
    x = tape.term("x", 0.4)
    y = x.apply("s", math.sin, math.cos, pg.unary("nsin", lambda v: -math.sin(v), lambda v: -math.cos(v)))
    d = y
    for expected in (math.cos(0.4), -math.sin(0.4), -math.cos(0.4)):
        d = pg.grad(d, x)
        assert d.value == expected
    with pytest.raises(pg.DerivativeError):
        pg.grad(d, x)


_cffi = cffi.FFI()
_cffi.cdef("double sin(double); double cos(double); double exp(double);")
_cmath = _cffi.dlopen(None)


def _ctypes_libm():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    for name in ("sin", "cos", "exp"):
        fn = getattr(libm, name)
        fn.restype = ctypes.c_double
        fn.argtypes = [ctypes.c_double]
    return libm


@pytest.mark.parametrize("kind", ["cffi", "ctypes"])
def test_native_derivatives(kind):
    m = _cmath if kind == "cffi" else _ctypes_libm()
    tape = pg.Tape()
    x = tape.term("x", 0.8)
    y = x.apply("nsin", m.sin, m.cos)
    d1 = pg.grad(y, x)
    assert d1.value == math.cos(0.8)
    x.set(-0.3)
    assert d1.value == math.cos(-0.3)
    with pytest.raises(pg.DerivativeError, match="nsin"):
        pg.grad(d1, x)
    e = x.apply("nexp", m.exp, m.exp, m.exp)  # native d2f too
    assert pg.grad(pg.grad(e, x), x).value == math.exp(-0.3)


# ---- jacobian and hessian -------------------------------------------------------------


def test_jacobian_shape_and_values():
    tape = pg.Tape()
    xs = [tape.term("a", 0.3), tape.term("b", -1.1), tape.term("c", 2.0)]
    a, b, c = xs
    ys = [a * b + c, pg.sin(a) * pg.exp(c / 4), b**2 - a / c, pg.tanh(a + b + c)]
    n = len(tape)
    jac = pg.jacobian(ys, xs)
    assert len(tape) == n  # no nodes added
    assert isinstance(jac, np.ndarray) and jac.shape == (4, 3)
    point = [x.value for x in xs]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert close(jac[i, j], fd(y, x, point[j])), (i, j)
    assert pg.jacobian(ys[:2], xs[1:]).shape == (2, 2)
    assert pg.jacobian(ys[0], xs[0]).shape == (1, 1)
    assert pg.jacobian(ys[0], xs[0])[0, 0] == -1.1
    assert pg.jacobian([], xs).shape == (0, 3)
    # it follows set()
    a.set(1.0)
    assert pg.jacobian([ys[0]], [a, b, c]).tolist() == [[-1.1, 1.0, 1.0]]


def test_hessian_vs_finite_differences_of_the_gradient():
    tape = pg.Tape()
    x, y, z = tape.term("x", 0.4), tape.term("y", 1.3), tape.term("z", -0.6)
    f = pg.sin(x * y) + pg.exp(x) / y + z**3 * x + pg.log(y) * pg.tanh(z)
    grads = pg.grad(f, [x, y, z])
    hess = pg.hessian(f, [x, y, z])
    assert hess.shape == (3, 3)
    point = [0.4, 1.3, -0.6]
    for i, g in enumerate(grads):
        for j, v in enumerate((x, y, z)):
            assert close(hess[i, j], fd(g, v, point[j])), (i, j)
    np.testing.assert_allclose(hess, hess.T, rtol=1e-13, atol=1e-15)


def rosenbrock_hessian(x, y):
    return np.array([[2 - 400 * (y - x * x) + 800 * x * x, -400 * x], [-400 * x, 200.0]])


def test_rosenbrock_hessian_closed_form():
    tape = pg.Tape()
    x, y = tape.term("x", 0.0), tape.term("y", 0.0)
    f = (1 - x) ** 2 + 100 * (y - x**2) ** 2
    grad = pg.grad(f, [x, y])
    for point in ((-1.2, 1.0), (1.0, 1.0), (0.3, -0.7), (2.0, 4.5)):
        tape.set_values([x, y], np.array(point))
        px, py = point
        assert [g.value for g in grad] == pytest.approx(
            [-2 * (1 - px) - 400 * px * (py - px * px), 200 * (py - px * px)], rel=1e-13, abs=1e-12)
        hess = pg.hessian(f, [x, y])
        np.testing.assert_allclose(hess, rosenbrock_hessian(*point), rtol=1e-13)
        assert (hess == hess.T).all()


def test_hessian_of_a_single_term():
    tape = pg.Tape()
    x = tape.term("x", 1.5)
    assert pg.hessian(x**3, x).tolist() == [[9.0]]
    assert pg.hessian(x**3, [x]).shape == (1, 1)


# ---- Hermite: derivatives of exp(-x^2) to order 6 -------------------------------------


def test_gaussian_derivatives_are_hermite_polynomials():
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    d = pg.exp(-(x**2))
    orders = []
    for _ in range(6):
        d = pg.grad(d, x)
        orders.append(d)
    points = np.array([-2.7, -1.3, -0.5, 0.0, 0.25, 0.9, 1.7, 3.1])
    batch = tape.eval_batch(orders, [x], points.reshape(-1, 1).copy())
    for k in range(1, 7):
        expected = (-1) ** k * hermite.hermval(points, [0] * k + [1]) * np.exp(-points**2)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(batch[:, k - 1], expected, rtol=1e-9, atol=1e-12 * scale)
        for p, e in zip(points, expected):  # the scalar path agrees
            x.set(p)
            assert orders[k - 1].value == pytest.approx(e, rel=1e-9, abs=1e-12 * scale)


# ---- bad input ------------------------------------------------------------------------


def test_bad_input():
    tape, other = pg.Tape(), pg.Tape()
    x = tape.term("x", 1.0)
    u = other.term("u", 1.0)
    y = x * x
    with pytest.raises(TypeError):
        pg.grad(3.0, x)
    with pytest.raises(TypeError):
        pg.grad(y, 3.0)
    with pytest.raises(TypeError):
        pg.grad(y, [x, "x"])
    n = len(tape)
    with pytest.raises(pg.TapeMismatchError):
        pg.grad(y, u)
    with pytest.raises(pg.TapeMismatchError):
        pg.grad(y, [x, u])
    with pytest.raises(pg.TapeMismatchError):
        pg.jacobian([y], [u])
    with pytest.raises(pg.TapeMismatchError):
        pg.jacobian([y, u * 2], [x])
    with pytest.raises(pg.TapeMismatchError):
        pg.hessian(y, [x, u])
    assert len(tape) == n
    assert issubclass(pg.TapeMismatchError, pg.PyrogradError)
    assert issubclass(pg.DerivativeError, pg.PyrogradError)


# ---- the examples ---------------------------------------------------------------------

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # main() stays under __main__: importing runs nothing
    return module


def run_example(name, *args):
    return subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", *args],
                          capture_output=True, text=True, timeout=120)


def test_higher_order_gaussian_matches_hermite():
    example = load_example("higher_order_gaussian")
    xs = np.linspace(-3, 3, 601)
    values, added = example.gaussian_derivatives(xs)
    assert values.shape == (601, 4)
    assert added <= 60
    for k in range(4):
        expected = (-1) ** k * hermite.hermval(xs, [0] * k + [1]) * np.exp(-xs**2)
        np.testing.assert_allclose(values[:, k], expected, rtol=1e-9, atol=1e-12)
    # any order, one eval_batch
    values6, _ = example.gaussian_derivatives(xs[::50], orders=6)
    expected6 = hermite.hermval(xs[::50], [0] * 6 + [1]) * np.exp(-xs[::50] ** 2)
    np.testing.assert_allclose(values6[:, 6], expected6, rtol=1e-9, atol=1e-10)


def test_higher_order_gaussian_runs(tmp_path):
    pytest.importorskip("matplotlib")
    result = run_example("higher_order_gaussian", "--out", str(tmp_path / "pictures"))
    assert result.returncode == 0, result.stderr
    png = tmp_path / "pictures" / "higher_order_gaussian.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "x = +0.0: d0 = +1.000000" in result.stdout and "d2 = -2.000000" in result.stdout


def test_newton_converges_on_rosenbrock():
    example = load_example("newton")
    path = example.newton()
    steps = len(path) - 1
    assert steps < 30
    point, value, norm = path[-1]
    assert norm < 1e-10
    np.testing.assert_allclose(point, [1.0, 1.0], rtol=0, atol=1e-10)
    assert value < 1e-20
    np.testing.assert_array_equal(path[0][0], [-1.2, 1.0])
    assert path[0][1] == pytest.approx(24.2)
    with pytest.raises(RuntimeError, match="did not converge"):
        example.newton(max_steps=2)


def test_newton_runs():
    result = run_example("newton")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("step  0  x = -1.2")
    last = lines[-1]
    assert last.startswith("converged to (1.000000000000000, 1.000000000000000) in ")
    assert int(last.split(" in ")[1].split()[0]) < 30


# ---- derivative chains that cycle ------------------------------------------------------

def neg_sin(v):
    return -math.sin(v)


def neg_cos(v):
    return -math.cos(v)


def _cycles():
    """exp, its own derivative; sin -> cos -> -sin -> -cos -> sin."""
    exp = pg.unary("exp_cycle", math.exp, None)
    exp.df = exp
    sin, cos = pg.unary("sin_cycle", math.sin, None), pg.unary("cos_cycle", math.cos, None)
    nsin, ncos = pg.unary("nsin_cycle", neg_sin, None), pg.unary("ncos_cycle", neg_cos, None)
    sin.df, cos.df, nsin.df, ncos.df = cos, nsin, ncos, sin
    return exp, sin, cos


EXP_CYCLE, SIN_CYCLE, COS_CYCLE = _cycles()  # module level: they pickle
SIN_DERIVATIVES = [math.sin, math.cos, neg_sin, neg_cos]


def test_a_function_that_is_its_own_derivative_differentiates_to_any_order():
    """pyrograd.unary chains were registered by recursion on df, so a chain
    that comes back to itself (op.df = op) raised RecursionError; the C
    table supported cycles all along."""
    tape = pg.Tape()
    x = tape.term("x", 0.7)
    d = EXP_CYCLE(x)
    assert lib_fn_count(tape) == 1  # registered once, its own derivative
    for _ in range(6):
        d = pg.grad(d, x)
        assert d.value == math.exp(0.7)
    assert lib_fn_count(tape) == 1
    y = EXP_CYCLE(2 * x)
    for order in range(1, 7):
        y = pg.grad(y, x)
        assert y.value == pytest.approx(2**order * math.exp(1.4), rel=1e-14)
    z = EXP_CYCLE(x) * x
    assert z.derive(x) == pytest.approx(math.exp(0.7) * 1.7, rel=1e-15)
    z.backprop()
    assert x.grad == pytest.approx(math.exp(0.7) * 1.7, rel=1e-15)


@pytest.mark.parametrize("kind", ["module functions", "lambdas"])
def test_a_cycle_of_four_derivatives_differentiates_to_any_order(kind):
    if kind == "module functions":
        sin = SIN_CYCLE
    else:
        sin, cos = pg.unary("s", math.sin, None), pg.unary("c", math.cos, None)
        nsin, ncos = pg.unary("-s", lambda v: -math.sin(v), None), pg.unary("-c", lambda v: -math.cos(v), None)
        sin.df, cos.df, nsin.df, ncos.df = cos, nsin, ncos, sin
    tape = pg.Tape()
    x = tape.term("x", 0.4)
    d = sin(x)
    assert lib_fn_count(tape) == 4  # each op once, linked into a cycle
    for order in range(1, 7):
        d = pg.grad(d, x)
        assert d.value == SIN_DERIVATIVES[order % 4](0.4)
    y = sin(3 * x)
    for order in range(1, 7):
        y = pg.grad(y, x)
        assert y.value == pytest.approx(3**order * SIN_DERIVATIVES[order % 4](1.2), rel=1e-14)
    x.set(-1.1)
    assert d.value == SIN_DERIVATIVES[6 % 4](-1.1)
    assert sin(x).derive(x) == math.cos(-1.1)
    sin(x).backprop()
    assert x.grad == math.cos(-1.1)
    assert lib_fn_count(tape) == 4


def test_an_op_of_a_registered_cycle_reuses_its_function():
    tape = pg.Tape()
    x = tape.term("x", 0.4)
    SIN_CYCLE(x)
    assert COS_CYCLE(x).value == math.cos(0.4)
    assert lib_fn_count(tape) == 4
    second = pg.Tape()
    u = second.term("u", 0.4)
    COS_CYCLE(u)  # entering the cycle at another op
    assert lib_fn_count(second) == 4
    assert pg.grad(pg.grad(pg.grad(SIN_CYCLE(u), u), u), u).value == neg_cos(0.4)
    assert lib_fn_count(second) == 4


def test_a_cycle_as_df_or_d2f_of_apply():
    tape = pg.Tape()
    x = tape.term("x", 0.3)
    y = x.apply("exp", math.exp, EXP_CYCLE)
    z = x.apply("sin", math.sin, math.cos, COS_CYCLE.df)  # d2f = -sin, whose chain cycles
    for order in range(1, 7):
        y, z = pg.grad(y, x), pg.grad(z, x)
        assert y.value == math.exp(0.3)
        assert z.value == SIN_DERIVATIVES[order % 4](0.3)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_tapes_with_cyclic_chains_copy_and_pickle(how):
    import copy
    import pickle

    tape = pg.Tape()
    x = tape.term("x", 0.9)
    y = EXP_CYCLE(x) + SIN_CYCLE(x)
    first = pg.grad(y, x)
    x2, y2, first2 = pickle.loads(pickle.dumps([x, y, first])) if how == "pickle" else copy.deepcopy([x, y, first])
    assert (y2.value, first2.value) == (y.value, first.value)
    d, d2 = first, first2
    for order in range(2, 7):
        d, d2 = pg.grad(d, x), pg.grad(d2, x2)
        assert d2.value == d.value == math.exp(0.9) + SIN_DERIVATIVES[order % 4](0.9)
    count = lib_fn_count(x2.tape)
    again = EXP_CYCLE(x2) + COS_CYCLE(x2)
    assert again.value == math.exp(0.9) + math.cos(0.9)
    if how == "deepcopy":  # the same ops: their functions are reused (a pickle holds copies of the ops)
        assert lib_fn_count(x2.tape) == count
    x2.set(0.1)
    assert d2.value == math.exp(0.1) + SIN_DERIVATIVES[6 % 4](0.1)


def lib_fn_count(tape):
    from _pyrograd_core import lib

    return lib.pg_fn_count(tape._ptr)
