"""@pg.function calls that must never return another call's number: threads,
Python control flow on values, math-module functions, and bad arguments."""

import math
import threading
from fractions import Fraction

import numpy as np
import pytest

import pyrograd as pg


def expected(x, y):
    return math.sin(x) * y + x * x


def expected_grad(x, y):
    return math.cos(x) * y + 2 * x, math.sin(x)


def make_f():
    @pg.function
    def f(x, y):
        return pg.sin(x) * y + x**2

    return f


def run_threads(n, work):
    """Runs work(k) on n threads started together; re-raises the first error."""
    barrier = threading.Barrier(n)
    errors = []

    def body(k):
        try:
            barrier.wait()
            work(k)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ---- item 2: one Function, many threads ---------------------------------------------------


def test_scalar_calls_from_many_threads_get_their_own_results():
    f = make_f()
    f(0.0, 0.0)
    wrong = []

    def work(k):
        for i in range(3000):
            x, y = k + i * 1e-3, i - k * 0.5
            got = f(x, y)
            if got != pytest.approx(expected(x, y), rel=1e-12, abs=1e-12):
                wrong.append((k, i, got))

    run_threads(8, work)
    assert wrong == []


def test_gradients_from_many_threads_get_their_own_results():
    f = make_f()
    wrong = []

    def work(k):
        for i in range(1500):
            x, y = -k - i * 1e-3, 0.5 * i + k
            value, (gx, gy) = f.value_and_grad(x, y)
            if value != pytest.approx(expected(x, y), rel=1e-12, abs=1e-12) or (gx, gy) != pytest.approx(
                expected_grad(x, y), rel=1e-12, abs=1e-12
            ):
                wrong.append((k, i))
            if f.grad(x, y, argnums=1) != pytest.approx(math.sin(x), rel=1e-12, abs=1e-12):
                wrong.append((k, i, "grad"))

    run_threads(8, work)
    assert wrong == []


def test_array_and_scalar_calls_mixed_across_threads():
    f = make_f()
    wrong = []

    def work(k):
        xs = np.linspace(-1, 1, 7) + k
        for i in range(300):
            ys = np.full(7, float(i))
            if k % 2:
                out = f(xs, ys)
                want = np.sin(xs) * ys + xs**2
                if not np.allclose(out, want, rtol=1e-12, atol=1e-12):
                    wrong.append((k, i))
                _, (gx, gy) = f.value_and_grad(xs, ys)
                if not np.allclose(gx, np.cos(xs) * ys + 2 * xs, rtol=1e-12, atol=1e-12):
                    wrong.append((k, i, "grad"))
            else:
                if f(float(k), float(i)) != pytest.approx(expected(k, i), rel=1e-12, abs=1e-12):
                    wrong.append((k, i, "scalar"))

    run_threads(8, work)
    assert wrong == []


def test_branching_function_from_many_threads():
    @pg.function
    def f(x):
        return x * 2 if x > 0 else x * x

    wrong = []

    def work(k):
        for i in range(1000):
            x = (i - 500) * 0.01 + k * 1e-4
            if f(x) != (x * 2 if x > 0 else x * x):
                wrong.append((k, i))

    run_threads(8, work)
    assert wrong == []


# ---- item 3: math.*(term), bool, == and control flow ----------------------------------------


@pytest.mark.parametrize("name", ["sin", "exp", "log", "sqrt", "tanh", "cos"])
def test_math_module_on_a_traced_term_is_an_error_naming_pg(name):
    fn = getattr(math, name)
    f = pg.function(lambda a: fn(a))
    with pytest.raises(TypeError, match=rf"pg\.{name}\b"):
        f(1.0)
    with pytest.raises(TypeError, match="pg.function"):
        f(2.0)  # never a frozen constant


def test_float_of_a_traced_term_is_an_error():
    @pg.function
    def f(x):
        return x * float(x)

    with pytest.raises(TypeError, match=r"pg\.sin"):
        f(3.0)


def test_float_outside_tracing_is_the_current_value():
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    y = x * 2
    assert float(y) == 1.0 and math.sin(y) == math.sin(1.0)
    x.set(2.0)
    assert float(y) == 4.0 and math.exp(y) == math.exp(4.0)


def test_an_if_on_a_comparison_follows_each_calls_values():
    @pg.function
    def traced_abs(x):
        return x if x > 0 else -x

    assert traced_abs(2.0) == 2.0
    assert traced_abs(-3.0) == 3.0
    assert traced_abs.grad(-3.0) == (-1.0,)
    assert traced_abs.grad(5.0) == (1.0,)
    np.testing.assert_array_equal(traced_abs(np.array([-1.0, 1.0, -2.5, 0.0])), [1.0, 1.0, 2.5, 0.0])
    np.testing.assert_array_equal(traced_abs.grad(np.array([-1.0, 1.0]), argnums=0), [-1.0, 1.0])
    grid = np.linspace(-2, 2, 12).reshape(3, 4)
    np.testing.assert_array_equal(traced_abs(grid), np.abs(grid))
    assert traced_abs(np.zeros((0, 2))).shape == (0, 2)

    @pg.function
    def negative_first(x):
        return x if x > 0 else -x

    assert negative_first(-3.0) == 3.0 and negative_first(2.0) == 2.0


def test_a_loop_bound_by_a_comparison_follows_each_calls_values():
    @pg.function
    def halve_until_small(x):
        while x > 1:
            x = x / 2
        return x

    assert halve_until_small(5.0) == 0.625
    assert halve_until_small(100.0) == 0.78125
    assert halve_until_small(0.5) == 0.5
    assert halve_until_small.grad(100.0) == (1 / 128,)
    xs = np.array([5.0, 100.0, 0.5, 3.0])
    np.testing.assert_array_equal(halve_until_small(xs), [0.625, 0.78125, 0.5, 0.75])


def test_comparisons_between_arguments_and_reflected_comparisons():
    @pg.function
    def f(x, y):
        if 0 < x:  # reflected: x.__gt__(0)
            return x - y if x >= y else y - x
        return x * y

    for x, y in [(1.0, 0.5), (0.5, 1.0), (-1.0, 2.0), (2.0, 2.0), (-2.0, -3.0)]:
        want = (x - y if x >= y else y - x) if 0 < x else x * y
        assert f(x, y) == want
    xs, ys = np.array([1.0, 0.5, -1.0, 2.0]), np.array([0.5, 1.0, 2.0, 2.0])
    np.testing.assert_array_equal(f(xs, ys), [0.5, 0.5, -2.0, 0.0])


def test_a_user_function_failing_on_a_branch_these_values_do_not_take():
    @pg.function
    def f(x):
        if x > 0:
            return x.apply("log", math.log, lambda v: 1 / v)  # math.log(-1) raises
        return x * 0

    assert f(1.0) == 0.0
    assert f(-1.0) == 0.0 and f.grad(-2.0) == (0.0,)
    np.testing.assert_array_equal(f(np.array([-1.0, 1.0, -3.0])), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(f.grad(np.array([-1.0, 0.5]), argnums=0), [0.0, 2.0])

    @pg.function
    def g(x):
        if x > -5:
            return x.apply("log", math.log, lambda v: 1 / v)
        return x * 0

    assert g(1.0) == 0.0 and g(-10.0) == 0.0
    with pytest.raises(ValueError, match="math domain"):
        g(-1.0)  # its own branch fails: the error is the user function's
    with pytest.raises(ValueError, match="math domain"):
        g(np.array([1.0, -1.0]))
    assert "2 paths" in repr(g)  # the failing call added none


def test_bool_of_a_term_follows_each_calls_values():
    @pg.function
    def f(x):
        return x * 3 if x else x + 1

    assert f(2.0) == 6.0 and f(0.0) == 1.0 and f(-1.0) == -3.0
    np.testing.assert_array_equal(f(np.array([0.0, 2.0])), [1.0, 6.0])
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    assert not x and not bool(x * 5)
    x.set(0.25)
    assert x and bool(x - 1)


def test_eq_with_a_number_is_an_error_that_explains():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    with pytest.raises(TypeError, match=r"\.value"):
        x == 1.0  # noqa: B015
    with pytest.raises(TypeError):
        x != 1  # noqa: B015
    with pytest.raises(TypeError):
        np.float64(1.0) == x  # noqa: B015

    @pg.function
    def f(x):
        return x if x == 0 else 1 / x

    with pytest.raises(TypeError, match="=="):
        f(0.0)


def test_a_comparison_with_a_term_of_another_tape_is_checked_at_each_call():
    model = pg.Tape()
    threshold = model.term("threshold", 1.0)

    @pg.function
    def f(x):
        return x * 10 if x > threshold else x

    assert f(2.0) == 20.0 and f(0.5) == 0.5
    threshold.set(3.0)  # read again by every call
    assert f(2.0) == 2.0
    np.testing.assert_array_equal(f(np.array([2.0, 4.0])), [2.0, 40.0])


def test_an_error_while_tracing_leaves_nothing_behind():
    @pg.function
    def f(x):
        if x > 0:
            raise RuntimeError("boom")
        return x

    with pytest.raises(RuntimeError, match="boom"):
        f(1.0)
    assert "not traced" in repr(f) and not pg.tape._tracing
    assert f(-1.0) == -1.0
    tape = pg.Tape()
    assert float(tape.term("x", 2.0)) == 2.0


def test_terms_still_work_in_sets_and_dicts():
    tape = pg.Tape()
    a, b = tape.term("a", 1.0), tape.term("b", 1.0)
    assert a == a and a != b and tape[a.index] == a
    assert len({a, b, tape[a.index]}) == 2 and {a: 1}[tape[a.index]] == 1
    assert (a == None) is False and (a != "a") is True  # noqa: E711


def test_too_many_paths_is_an_error_that_explains():
    @pg.function
    def halve_until_small(x):
        while x > 1:
            x = x / 2
        return x

    with pytest.raises(pg.PyrogradError, match="pg.maximum"):
        halve_until_small(np.logspace(0, 30, 200))
    assert halve_until_small(5.0) == 0.625  # still usable


# ---- item 14: arguments and signatures ----------------------------------------------------


@pytest.mark.parametrize("bad", [
    None, "1.0", np.datetime64("2020-01-01"), 1 + 2j, [None, 1.0], ["1.0"],
    np.array(["2.0"]), np.array(["2020-01-01"], dtype="datetime64[D]"), np.array([1.0, None]),
    object(),
])
def test_arguments_that_are_not_real_numbers_are_refused(bad):
    f = make_f()
    with pytest.raises(TypeError, match="real numbers"):
        f(bad, 1.0)
    assert "not traced" in repr(f)
    f(1.0, 2.0)
    with pytest.raises(TypeError, match="real numbers"):
        f(1.0, bad)
    with pytest.raises(TypeError):
        f.grad(bad, 1.0)


def test_terms_as_arguments_are_refused():
    f = make_f()
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    with pytest.raises(TypeError, match="Term"):
        f(x, 2.0)
    f(1.0, 2.0)
    with pytest.raises(TypeError, match="Term"):
        f(1.0, x)
    with pytest.raises(TypeError, match="Term"):
        f(f.tape[0], 2.0)  # its own tape's
    with pytest.raises(TypeError, match="Term"):
        f.value_and_grad([x, x], 1.0)


def test_integer_and_boolean_arguments_are_real_numbers():
    f = make_f()
    assert f(np.int64(2), True) == expected(2.0, 1.0)
    assert f(Fraction(1, 2), np.float32(2)) == expected(0.5, 2.0)
    np.testing.assert_array_equal(f([Fraction(1, 2), 1], 2.0), [expected(0.5, 2.0), expected(1.0, 2.0)])
    np.testing.assert_allclose(f(np.arange(3), np.array([1, 0, 1])), [0.0, 1.0, math.sin(2) + 4], rtol=1e-15)
    np.testing.assert_allclose(f(np.arange(3, dtype=np.float32), 1.0), [expected(k, 1.0) for k in range(3)],
                               rtol=1e-15)


@pytest.mark.parametrize("source, kind", [
    ("def g(*xs): return xs[0]", r"\*xs"),
    ("def g(x, *rest): return x", r"\*rest"),
    ("def g(x, *, k): return x", "k"),
    ("def g(x, **options): return x", r"\*\*options"),
])
def test_only_positional_parameters_are_supported(source, kind):
    scope = {}
    exec(source, scope)
    with pytest.raises(TypeError, match=rf"positional parameters.*{kind}"):
        pg.function(scope["g"])
