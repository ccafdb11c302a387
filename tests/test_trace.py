"""@pg.function: a Python function of scalars traced into a tape once."""

import numpy as np
import pytest

import pyrograd as pg


def by_hand(x0, y0):
    """The same expression as `f` below, built directly on a tape."""
    tape = pg.Tape()
    x, y = tape.term("x", x0), tape.term("y", y0)
    return tape, x, y, pg.sin(x) * y + x**2 / (1 + pg.exp(-y))


def numpy_f(x, y):
    return np.sin(x) * y + x**2 / (1 + np.exp(-y))


def numpy_grad(x, y):
    s = 1 / (1 + np.exp(-y))
    return np.cos(x) * y + 2 * x * s, np.sin(x) + x**2 * s * (1 - s)


def make_f():
    calls = []

    @pg.function
    def f(x, y):
        """sin(x) y + x^2 sigmoid(y)."""
        calls.append(1)
        return pg.sin(x) * y + x**2 / (1 + pg.exp(-y))

    return f, calls


def fd(fun, args, k, h=1e-6):
    up, down = list(args), list(args)
    up[k] += h
    down[k] -= h
    return (fun(*up) - fun(*down)) / (2 * h)


# ---- scalar calls ------------------------------------------------------------------------


def test_scalar_calls_equal_the_hand_built_tape():
    f, calls = make_f()
    assert f.__name__ == "f" and "sigmoid" in f.__doc__
    for x0, y0 in ((1.0, 2.0), (-0.3, 0.7), (2.5, -1.5), (0, 3)):
        value = f(x0, y0)
        assert type(value) is float
        _, _, _, out = by_hand(float(x0), float(y0))
        assert value == out.value  # the same nodes: the same bits
    assert len(calls) == 1, "traced once, on the first call"
    assert f(np.float64(0.5), np.int64(2)) == by_hand(0.5, 2.0)[3].value


def test_tape_before_and_after_the_first_call():
    f, _ = make_f()
    with pytest.raises(pg.PyrogradError, match="traced"):
        f.tape
    with pytest.raises(pg.PyrogradError):
        f.dot()
    assert "not traced" in repr(f)
    f(1.0, 2.0)
    assert isinstance(f.tape, pg.Tape)
    hand_tape = by_hand(1.0, 2.0)[0]
    assert len(f.tape) == len(hand_tape)
    assert f"{len(f.tape)} nodes" in repr(f)


def test_dot_returns_the_traced_graph():
    f, _ = make_f()
    f(1.0, 2.0)
    text = f.dot()
    assert text.startswith("digraph")
    for label in ('"x"', '"y"', '"sin"', '"exp"', '"*"', '"+"', '"/"'):
        assert label in text
    assert "0.8415" in f.dot(show_values=True)  # sin(1)


def test_wrong_number_of_arguments():
    f, calls = make_f()
    with pytest.raises(TypeError, match="2 arguments"):
        f(1.0)
    with pytest.raises(TypeError):
        f(1.0, 2.0, 3.0)
    assert calls == [] and "not traced" in repr(f)  # nothing was traced by a bad call
    f(1.0, 2.0)
    with pytest.raises(TypeError):
        f(np.ones(3))
    with pytest.raises(TypeError):
        f.grad(1.0)
    with pytest.raises(TypeError):
        f(x=1.0, y=2.0)


# ---- arrays ----------------------------------------------------------------------------------


@pytest.mark.parametrize("xs, ys", [
    (np.linspace(-2, 2, 3), np.array([0.5, -1.0, 2.0])),             # (3,) with (3,)
    (np.linspace(-2, 2, 6).reshape(2, 3), np.array([0.5, -1.0, 2.0])),  # (2, 3) with (3,)
    (0.7, np.linspace(-1, 1, 4)),                                   # scalar with array
    (np.linspace(-1, 1, 5), 1.5),                                   # array with scalar
    ([[1.0], [2.0]], [0.1, 0.2, 0.3]),                              # lists, (2, 1) with (3,)
])
def test_arrays_broadcast_like_numpy(xs, ys):
    f, calls = make_f()
    out = f(xs, ys)
    shape = np.broadcast_shapes(np.shape(xs), np.shape(ys))
    assert isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.float64
    bx, by = np.broadcast_arrays(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
    elementwise = np.array([f(float(a), float(b)) for a, b in zip(bx.ravel(), by.ravel())]).reshape(shape)
    np.testing.assert_array_equal(out, elementwise)
    np.testing.assert_allclose(out, numpy_f(bx, by), rtol=1e-14)
    assert len(calls) == 1


def test_a_big_array_in_one_call():
    f, _ = make_f()
    xs = np.linspace(-3, 3, 200_001)
    out = f(xs, 0.25)
    np.testing.assert_allclose(out, numpy_f(xs, 0.25), rtol=1e-13, atol=1e-15)
    assert out[12345] == f(float(xs[12345]), 0.25)


def test_array_calls_leave_scalar_calls_alone():
    f, _ = make_f()
    assert f(1.0, 2.0) == by_hand(1.0, 2.0)[3].value
    f(np.arange(5.0), np.arange(5.0))
    assert f(1.0, 2.0) == by_hand(1.0, 2.0)[3].value


def test_first_call_with_arrays_traces_too():
    f, calls = make_f()
    out = f(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    np.testing.assert_allclose(out, numpy_f(np.array([1.0, 2.0]), np.array([3.0, 4.0])), rtol=1e-14)
    assert len(calls) == 1 and isinstance(f.tape, pg.Tape)
    assert f(2.0, 4.0) == out[1]


# ---- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("point", [(1.0, 2.0), (-0.3, 0.7), (2.5, -1.5)])
def test_scalar_gradients_against_the_hand_built_tape(point):
    f, _ = make_f()
    tape, x, y, out = by_hand(*point)
    out.backprop()
    gx, gy = x.grad, y.grad
    graph = [g.value for g in pg.grad(out, [x, y])]
    assert f.grad(*point) == (gx, gy)
    assert list(f.grad(*point)) == pytest.approx(graph, rel=1e-14)
    assert f.grad(*point, argnums=0) == gx
    assert f.grad(*point, argnums=1) == gy
    assert f.grad(*point, argnums=-1) == gy
    assert f.grad(*point, argnums=(1,)) == (gy,)
    assert f.grad(*point, argnums=(1, 0)) == (gy, gx)
    assert f.grad(*point, argnums=[0, 1]) == (gx, gy)
    value, grads = f.value_and_grad(*point)
    assert value == out.value and grads == (gx, gy)
    value, g0 = f.value_and_grad(*point, argnums=0)
    assert type(value) is float and type(g0) is float and g0 == gx
    assert g0 == pytest.approx(fd(f, point, 0), rel=1e-7)
    assert f.grad(*point, argnums=1) == pytest.approx(fd(f, point, 1), rel=1e-7)
    assert (gx, gy) == pytest.approx(numpy_grad(*point), rel=1e-13)


def test_array_gradients():
    f, _ = make_f()
    xs = np.linspace(-2, 2, 6).reshape(2, 3)
    ys = np.array([0.5, -1.0, 2.0])
    value, (gx, gy) = f.value_and_grad(xs, ys)
    assert value.shape == gx.shape == gy.shape == (2, 3)
    np.testing.assert_array_equal(value, f(xs, ys))
    ex, ey = numpy_grad(*np.broadcast_arrays(xs, ys))
    np.testing.assert_allclose(gx, ex, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(gy, ey, rtol=1e-13, atol=1e-15)
    for (i, j), _ in np.ndenumerate(xs):  # each entry is the scalar gradient
        assert (gx[i, j], gy[i, j]) == pytest.approx(f.grad(xs[i, j], ys[j]), rel=1e-14, abs=1e-15)
    g1 = f.grad(xs, ys, argnums=1)
    assert isinstance(g1, np.ndarray) and g1.shape == (2, 3)
    np.testing.assert_array_equal(g1, gy)
    (only,) = f.grad(0.3, ys, argnums=(0,))
    assert only.shape == (3,)
    np.testing.assert_allclose(only, numpy_grad(0.3, ys)[0], rtol=1e-13)
    # array gradients against finite differences of array calls
    h = 1e-6
    np.testing.assert_allclose(gx, (f(xs + h, ys) - f(xs - h, ys)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_array_gradients_build_the_gradient_graph_once():
    f, calls = make_f()
    f.grad(np.arange(3.0), 1.0)
    n = len(f.tape)
    f.grad(np.arange(4.0), np.arange(4.0))
    f.value_and_grad(np.arange(2.0), 1.0, argnums=0)
    assert len(f.tape) == n and len(calls) == 1


def test_bad_argnums():
    f, _ = make_f()
    for bad in (2, -3, (0, 2), "x", 1.0):
        with pytest.raises((ValueError, TypeError)):
            f.grad(1.0, 2.0, argnums=bad)


def test_unused_argument_identity_and_constant_functions():
    @pg.function
    def first(x, y):
        return x * x

    assert first.grad(3.0, 4.0) == (6.0, 0.0)
    gx, gy = first.grad(np.array([1.0, 3.0]), 4.0)
    np.testing.assert_array_equal(gx, [2.0, 6.0])
    np.testing.assert_array_equal(gy, [0.0, 0.0])

    @pg.function
    def identity(x):
        return x

    assert identity(3.0) == 3.0 and identity.grad(3.0) == (1.0,)
    np.testing.assert_array_equal(identity(np.array([1.0, 2.0])), [1.0, 2.0])
    np.testing.assert_array_equal(identity.grad(np.array([1.0, 2.0]), argnums=0), [1.0, 1.0])

    @pg.function
    def constant(x):
        return 5

    assert constant(3.0) == 5.0 and constant.grad(3.0) == (0.0,)
    np.testing.assert_array_equal(constant(np.zeros(3)), [5.0, 5.0, 5.0])

    @pg.function
    def not_a_term(x):
        return "five"

    with pytest.raises(TypeError):
        not_a_term(1.0)


# ---- control flow follows each call's values --------------------------------------------


def test_value_dependent_control_flow_follows_each_call():
    """Comparisons of Terms give plain bools from the current values, so an
    `if` picks a branch while tracing; the trace keeps the comparison as a
    guard, and a call whose values take the other branch traces that branch
    too.  pg.abs (or pg.maximum, pg.relu) keeps the choice in one graph."""

    @pg.function
    def traced_abs(x):
        return x if x > 0 else -x

    assert traced_abs(2.0) == 2.0
    assert traced_abs(-3.0) == 3.0  # its own branch, not the traced positive one
    assert traced_abs.grad(-3.0) == (-1.0,)
    np.testing.assert_array_equal(traced_abs(np.array([-1.0, 1.0])), [1.0, 1.0])
    assert "2 paths" in repr(traced_abs)

    @pg.function
    def graph_abs(x):
        return pg.abs(x)

    assert graph_abs(2.0) == 2.0 and graph_abs(-3.0) == 3.0
    assert graph_abs.grad(-3.0) == (-1.0,)
    assert "paths" not in repr(graph_abs)  # one graph for every value

    # a loop whose trip count depends on the value: one trace per trip count
    @pg.function
    def halve_until_small(x):
        while x > 1:
            x = x / 2
        return x

    assert halve_until_small(5.0) == 0.625  # three halvings
    assert halve_until_small(100.0) == 0.78125  # seven
    doc = " ".join(pg.function.__doc__.split())
    assert "control flow" in doc and "guard" in doc  # the docstring says so
