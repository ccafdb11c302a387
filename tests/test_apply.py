"""apply: custom unary ops from Python callables and native function pointers."""
import ctypes
import ctypes.util
import dataclasses
import gc
import math
import sys
import weakref

import cffi
import numpy as np
import pytest

import pyrograd as pg

# ---- native functions ------------------------------------------------------------

_cffi = cffi.FFI()
_cffi.cdef("double sin(double); double cos(double); double exp(double); float sinf(float);")
_cmath = _cffi.dlopen(None)


def _libm():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    for name in ("sin", "cos", "exp"):
        fn = getattr(libm, name)
        fn.restype = ctypes.c_double
        fn.argtypes = [ctypes.c_double]
    return libm


_ctypes_m = _libm()


class Boom(Exception):
    pass


class Interrupt(BaseException):
    pass


def _count_python_callbacks(action):
    """How many times the C core called back into Python during action()."""
    calls = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "pg_py_callback":
            calls.append(1)

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return len(calls)


# ---- Python callables ----------------------------------------------------------------

def test_python_callables(fd):
    tape = pg.Tape()
    x = tape.term("x", 1.3)
    seen = []

    def cube(v):
        seen.append(type(v))
        return v ** 3

    y = x.apply("cube", cube, lambda v: 3 * v * v)
    z = pg.apply(x, "cube", cube, lambda v: 3 * v * v)
    for t in (y, z):
        assert math.isclose(t.value, 1.3 ** 3, rel_tol=1e-15)
        assert math.isclose(t.derive(x), 3 * 1.3 ** 2, rel_tol=1e-15)
        t.backprop()
        assert math.isclose(x.grad, 3 * 1.3 ** 2, rel_tol=1e-15)
        assert math.isclose(t.derive(x), fd(t, x, 1.3), rel_tol=1e-7)
    assert seen and set(seen) == {float}
    x.set(-2.0)
    assert y.value == -8.0
    assert y.derive(x) == 12.0


def test_apply_inside_an_expression(fd):
    tape = pg.Tape()
    x, w = tape.term("x", 0.4), tape.term("w", 2.5)
    g = (x * w).apply("sq", lambda v: v * v, lambda v: 2 * v)
    y = g + pg.sin(g) * x
    u = 0.4 * 2.5
    assert math.isclose(y.value, u * u + math.sin(u * u) * 0.4, rel_tol=1e-15)
    y.backprop()
    dg = 1 + math.cos(u * u) * 0.4
    assert math.isclose(w.grad, dg * 2 * u * 0.4, rel_tol=1e-14)
    assert math.isclose(x.grad, dg * 2 * u * 2.5 + math.sin(u * u), rel_tol=1e-14)
    assert math.isclose(y.derive(w), fd(y, w, 2.5), rel_tol=1e-7)


def test_python_results_that_are_real_numbers_are_accepted():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    y = x.apply("int", lambda v: 7, lambda v: np.float64(0.5))
    assert y.value == 7.0 and type(y.value) is float
    assert y.derive(x) == 0.5


def test_unhashable_python_callables():
    @dataclasses.dataclass
    class Scaled:  # eq=True makes instances unhashable; still a callable
        k: float

        def __call__(self, v):
            return self.k * v

    @dataclasses.dataclass
    class Constant:
        k: float

        def __call__(self, v):
            return self.k

    with pytest.raises(TypeError):
        hash(Scaled(2.0))
    tape = pg.Tape()
    x = tape.term("x", 3.0)
    y = x.apply("scaled", Scaled(2.0), Constant(2.0))
    assert y.value == 6.0
    assert y.derive(x) == 2.0
    # equal but distinct callables are distinct functions
    z = x.apply("scaled", Scaled(5.0), Constant(5.0))
    assert (y.value, z.value) == (6.0, 15.0)


def test_same_function_applied_twice():
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    y1 = x.apply("sin", math.sin, math.cos)
    y2 = y1.apply("sin", math.sin, math.cos)
    assert math.isclose(y2.value, math.sin(math.sin(0.5)), rel_tol=1e-15)
    assert math.isclose(y2.derive(x), math.cos(math.sin(0.5)) * math.cos(0.5), rel_tol=1e-15)


def test_distinct_functions_with_one_name_stay_distinct():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    y1 = x.apply("f", lambda v: v + 1, lambda v: 1.0)
    y2 = x.apply("f", lambda v: v * 10, lambda v: 10.0)
    assert (y1.value, y2.value) == (3.0, 20.0)
    assert (y1.derive(x), y2.derive(x)) == (1.0, 10.0)


# ---- native pointers ---------------------------------------------------------------

def test_cffi_native_pointers():
    assert _cffi.getctype(_cffi.typeof(_cmath.sin)) == "double(*)(double)"
    tape = pg.Tape()
    x = tape.term("x", 0.7)
    y = x.apply("sin", _cmath.sin, _cmath.cos)
    assert math.isclose(y.value, math.sin(0.7), rel_tol=1e-15)
    assert math.isclose(y.derive(x), math.cos(0.7), rel_tol=1e-15)
    y.backprop()
    assert math.isclose(x.grad, math.cos(0.7), rel_tol=1e-15)
    x.set(2.0)
    assert math.isclose(y.value, math.sin(2.0), rel_tol=1e-15)


def test_cffi_native_pointers_do_not_enter_python():
    tape = pg.Tape()
    x = tape.term("x", 0.7)
    native = x.apply("sin", _cmath.sin, _cmath.cos)
    python = x.apply("pysin", math.sin, math.cos)

    def read(term):
        def action():
            x.set(x.value + 0.1)
            term.value
            term.derive(x)
            term.backprop()
        return action

    assert _count_python_callbacks(read(python)) >= 3  # the detector works
    assert _count_python_callbacks(read(native)) == 0


def test_ctypes_native_pointers():
    tape = pg.Tape()
    x = tape.term("x", 0.7)
    y = x.apply("sin", _ctypes_m.sin, _ctypes_m.cos)
    assert math.isclose(y.value, math.sin(0.7), rel_tol=1e-15)
    assert math.isclose(y.derive(x), math.cos(0.7), rel_tol=1e-15)
    y.backprop()
    assert math.isclose(x.grad, math.cos(0.7), rel_tol=1e-15)
    assert _count_python_callbacks(lambda: (x.set(1.0), y.value, y.backprop())) == 0
    assert math.isclose(y.value, math.sin(1.0), rel_tol=1e-15)


@pytest.mark.parametrize(
    "f, df",
    [
        pytest.param(_cmath.exp, lambda v: math.exp(v), id="cffi-f-python-df"),
        pytest.param(math.exp, _cmath.exp, id="python-f-cffi-df"),
        pytest.param(_cmath.exp, _ctypes_m.exp, id="cffi-f-ctypes-df"),
        pytest.param(_ctypes_m.exp, lambda v: math.exp(v), id="ctypes-f-python-df"),
    ],
)
def test_mixed_native_and_python(f, df):
    tape = pg.Tape()
    x = tape.term("x", 0.3)
    y = x.apply("exp", f, df) * 2
    assert math.isclose(y.value, 2 * math.exp(0.3), rel_tol=1e-15)
    assert math.isclose(y.derive(x), 2 * math.exp(0.3), rel_tol=1e-15)
    y.backprop()
    assert math.isclose(x.grad, 2 * math.exp(0.3), rel_tol=1e-15)


def test_wrong_native_types_are_type_errors():
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    with pytest.raises(TypeError, match="double"):
        x.apply("sinf", _cmath.sinf, _cmath.cos)
    libm = ctypes.CDLL(ctypes.util.find_library("m"))  # restype left as c_int
    with pytest.raises(TypeError, match="restype|c_double"):
        x.apply("sin", libm.sin, _cmath.cos)
    libm.cos.restype = ctypes.c_double  # argtypes not set
    with pytest.raises(TypeError, match="argtypes|c_double"):
        x.apply("cos", _cmath.sin, libm.cos)
    # the tape is still fine
    assert (x * 2).value == 1.0


def test_bad_apply_arguments_are_type_errors():
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    with pytest.raises(TypeError):
        x.apply("f", 3.0, math.cos)
    with pytest.raises(TypeError):
        x.apply("f", math.sin, "cos")
    with pytest.raises(TypeError):
        x.apply(42, math.sin, math.cos)
    with pytest.raises(TypeError):
        pg.apply(0.5, "f", math.sin, math.cos)
    n = len(tape)
    assert (x + 1).value == 1.5
    assert len(tape) > n


# ---- exceptions from user functions ---------------------------------------------------

def test_exception_in_f_propagates_as_the_same_object():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    exc = Boom("from f")
    state = {"fail": True}

    def f(v):
        if state["fail"]:
            raise exc
        return v + 1

    y = x.apply("f", f, lambda v: 1.0) * 3
    with pytest.raises(Boom) as excinfo:
        y.value
    assert excinfo.value is exc
    with pytest.raises(Boom) as excinfo:
        y.derive(x)
    assert excinfo.value is exc
    with pytest.raises(Boom) as excinfo:
        y.backprop()
    assert excinfo.value is exc
    state["fail"] = False
    assert y.value == 6.0
    assert y.derive(x) == 3.0
    y.backprop()
    assert x.grad == 3.0
    x.set(2.0)
    assert y.value == 9.0


@pytest.mark.parametrize("where", ["derive", "backprop"])
def test_exception_in_df_propagates_as_the_same_object(where):
    tape = pg.Tape()
    x, w = tape.term("x", 1.0), tape.term("w", 4.0)
    exc = Boom("from df")
    state = {"fail": True}

    def df(v):
        if state["fail"]:
            raise exc
        return 2 * v

    y = x.apply("sq", lambda v: v * v, df) * w
    assert y.value == 4.0  # f is fine
    with pytest.raises(Boom) as excinfo:
        y.derive(x) if where == "derive" else y.backprop()
    assert excinfo.value is exc
    assert y.value == 4.0
    state["fail"] = False
    assert y.derive(x) == 8.0
    y.backprop()
    assert (x.grad, w.grad) == (8.0, 1.0)


def test_base_exceptions_propagate_too():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    exc = Interrupt()
    state = {"fail": True}

    def f(v):
        if state["fail"]:
            raise exc
        return v

    y = x.apply("f", f, lambda v: 1.0)
    with pytest.raises(Interrupt) as excinfo:
        y.value
    assert excinfo.value is exc
    state["fail"] = False
    assert (y * 2).value == 2.0


def test_nodes_before_a_failing_function_stay_readable():
    tape = pg.Tape()
    x = tape.term("x", 1.5)
    before = x * 2
    exc = Boom()

    def f(v):
        raise exc

    y = x.apply("f", f, lambda v: 1.0)
    with pytest.raises(Boom):
        y.value
    assert before.value == 3.0
    assert before.derive(x) == 2.0
    before.backprop()
    assert x.grad == 2.0
    x.set(2.0)
    assert before.value == 4.0


def test_nodes_after_a_failing_function_that_do_not_depend_on_it():
    tape = pg.Tape()
    x = tape.term("x", 1.5)
    exc = Boom()

    def f(v):
        raise exc

    y = x.apply("f", f, lambda v: 1.0)
    with pytest.raises(Boom):
        y.value
    z = x * 2  # independent of y
    assert z.value == 3.0


def test_each_read_raises_its_own_exception():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    raised = []

    def f(v):
        raised.append(Boom(len(raised)))
        raise raised[-1]

    def g(v):  # fails too, but f comes first in the tape: its exception is the one raised
        raise RuntimeError("g")

    y = x.apply("f", f, lambda v: 1.0) + x.apply("g", g, lambda v: 1.0)
    for _ in range(3):
        with pytest.raises(Boom) as excinfo:
            y.value
        assert excinfo.value is raised[-1]
    assert len(raised) == 3


def test_exception_when_drawing_values():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    exc = Boom()

    def f(v):
        raise exc

    y = x.apply("f", f, lambda v: 1.0)
    with pytest.raises(Boom) as excinfo:
        y.dot(show_values=True)
    assert excinfo.value is exc


@pytest.mark.parametrize("result", [None, "1.0", 1j, [1.0]])
def test_non_number_results_are_type_errors(result):
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    state = {"bad": True}
    y = x.apply("bad", lambda v: result if state["bad"] else v, lambda v: 1.0)
    with pytest.raises(TypeError):
        y.value
    z = x.apply("baddf", lambda v: v, lambda v: result if state["bad"] else 3.0)
    assert z.value == 1.0  # z does not depend on y, which still fails
    with pytest.raises(TypeError):
        y.value
    state["bad"] = False
    assert z.value == 1.0
    state["bad"] = True
    with pytest.raises(TypeError):
        z.derive(x)
    with pytest.raises(TypeError):
        z.backprop()
    state["bad"] = False
    assert z.derive(x) == 3.0
    w = x * 5 + y
    assert w.value == 6.0
    w.backprop()
    assert x.grad == 6.0


# ---- calling back into the tape -------------------------------------------------------

def test_callback_building_a_node_is_tape_busy():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    state = {"misbehave": True}

    def f(v):
        if state["misbehave"]:
            x + 1.0
        return v

    y = x.apply("builds", f, lambda v: 1.0)
    n = len(tape)
    with pytest.raises(pg.TapeBusyError):
        y.value
    assert len(tape) == n
    state["misbehave"] = False
    assert (y * 3).value == 3.0


def test_callback_making_a_leaf_or_applying_is_tape_busy():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    state = {"misbehave": True}

    def make_leaf(v):
        return tape.term("z", v).value if state["misbehave"] else v

    def nested_apply(v):
        return x.apply("inner", math.sin, math.cos).value if state["misbehave"] else v

    y1 = x.apply("leaf", make_leaf, lambda v: 1.0)
    with pytest.raises(pg.TapeBusyError):
        y1.value
    y2 = x.apply("nested", nested_apply, lambda v: 1.0)
    state["misbehave"] = False
    y1.value
    state["misbehave"] = True
    with pytest.raises(pg.TapeBusyError):
        y2.value
    state["misbehave"] = False
    assert (y1 + y2).value == 2.0


def test_callback_reading_a_stale_value_is_tape_busy():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    other = x * 2  # not evaluated yet when f runs
    state = {"peek": True}

    def f(v):
        return other.value + v if state["peek"] else v

    y = x.apply("peek", f, lambda v: 1.0)
    with pytest.raises(pg.TapeBusyError) as excinfo:
        y.value
    assert isinstance(excinfo.value, pg.PyrogradError)
    assert isinstance(excinfo.value, RuntimeError)
    assert other.value == 2.0
    state["peek"] = False
    assert (y + 1).value == 2.0


def test_callback_setting_or_backpropagating_is_tape_busy():
    tape = pg.Tape()
    x, w = tape.term("x", 1.0), tape.term("w", 2.0)
    out = x * w
    state = {"misbehave": True}

    def f(v):
        if state["misbehave"]:
            w.set(v)
        return v

    def df(v):
        if state["misbehave"]:
            out.backprop()
        return 1.0

    y = x.apply("sets", f, df)
    with pytest.raises(pg.TapeBusyError):
        y.value
    assert w.value == 2.0
    state["misbehave"] = False
    assert y.value == 1.0
    state["misbehave"] = True
    with pytest.raises(pg.TapeBusyError):
        y.backprop()
    with pytest.raises(pg.TapeBusyError):
        y.derive(x)
    state["misbehave"] = False
    out.backprop()
    assert (x.grad, w.grad) == (2.0, 1.0)
    assert y.derive(x) == 1.0


def test_callback_may_use_another_tape():
    other = pg.Tape()
    k = other.term("k", 3.0)
    tape = pg.Tape()
    x = tape.term("x", 2.0)

    def f(v):
        k.set(v)
        return (k * k).value

    y = x.apply("other", f, lambda v: 2 * v)
    assert y.value == 4.0
    assert y.derive(x) == 4.0


def test_tape_with_callbacks_is_collected():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    # closures that refer back to the tape make a reference cycle through it
    y = x.apply("closure", lambda v: v * 2 if x.tape else 0, lambda v: 2.0 if x.tape else 0)
    assert y.value == 4.0
    ref = weakref.ref(tape)
    del tape, x, y
    gc.collect()
    assert ref() is None


# ---- registration ------------------------------------------------------------------------

def _fn_count(tape):
    return pg._binding.lib.pg_fn_count(tape._ptr)


def test_registering_from_inside_a_sweep_of_the_tape_leaves_nothing():
    """A user function that registers another on the tape whose sweep runs
    it gets TapeBusyError, and the tape keeps no trace of the attempt: no C
    function, no record, nothing kept alive for it."""
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    attempts = []

    def f(v):
        try:
            x.apply("inner", lambda u: u + 1, lambda u: 1.0, lambda u: 0.0)
        except pg.TapeBusyError as error:
            attempts.append(error)
        return v

    y = x.apply("outer", f, lambda v: 1.0)
    count, records, alive = _fn_count(tape), dict(tape._functions), dict(tape._alive)
    assert y.value == 1.0
    x.set(2.0)
    assert y.derive(x) == 1.0 and y.value == 2.0
    assert len(attempts) == 2
    assert (_fn_count(tape), tape._functions, tape._alive) == (count, records, alive)
    assert x.apply("inner", math.sin, math.cos).value == math.sin(2.0)  # and outside a sweep it works


def test_a_unary_d2f_is_registered_once():
    """apply(x, name, f, df, op) with op a pyrograd.unary keyed its function by
    a chain op made anew on each call, so each call registered it again."""
    op = pg.unary("nsin", lambda v: -math.sin(v), lambda v: -math.cos(v))
    tape = pg.Tape()
    x = tape.term("x", 0.2)
    first = x.apply("s", math.sin, math.cos, op)
    count = _fn_count(tape)
    second = x.apply("s", math.sin, math.cos, op)
    assert _fn_count(tape) == count
    assert first.index != second.index and first.value == second.value


def test_pg_fn_define_checks_every_entry_first_and_defines_all_or_nothing():
    """The C entry point: a bad entry anywhere is PG_EINVAL naming it, and
    none of the call's functions is defined."""
    from _pyrograd_core import ffi, lib

    tape = pg.Tape()
    x = tape.term("x", 0.5)
    existing = pg.functions._register(tape, "sin", _cmath.sin, _cmath.cos)
    names = [ffi.new("char[]", b"a"), ffi.new("char[]", b"b")]

    def define(**changes):
        defs = ffi.new("pg_fndef[]", 3)
        for k in range(2):
            defs[k].fn, defs[k].name, defs[k].deriv, defs[k].base = -1, names[k], 1 - k, -1
            defs[k].order[0].native = ffi.cast("pg_native_fn", _cmath.exp)
        defs[1].order[1].native = ffi.cast("pg_native_fn", _cmath.exp)
        defs[2].fn = existing
        for field, value in changes.items():
            k, name = field.split("_", 1)
            setattr(defs[int(k[1:])], name, value)
        ids = ffi.new("int[]", 3)
        return lib.pg_fn_define(tape._ptr, defs, 3, ids), list(ids)

    bad = {
        "e1_deriv": 3, "e0_deriv": -2, "e1_base": 3, "e0_base": -2, "e1_level": -1,
        "e2_fn": existing + 1, "e1_fn": -2, "e0_name": ffi.NULL,
    }
    for field, value in bad.items():
        count = lib.pg_fn_count(tape._ptr)
        rc, _ = define(**{field: value})
        assert rc == lib.PG_EINVAL, field
        assert lib.pg_fn_count(tape._ptr) == count, field
    defs = ffi.new("pg_fndef[]", 1)
    defs[0].fn, defs[0].name = -1, names[0]
    defs[0].order[0].native, defs[0].order[0].callback = ffi.cast("pg_native_fn", _cmath.exp), lib.pg_py_callback
    assert lib.pg_fn_define(tape._ptr, defs, 1, ffi.new("int[]", 1)) == lib.PG_EINVAL
    assert "not both" in ffi.string(lib.pg_errmsg(tape._ptr)).decode()
    assert lib.pg_fn_define(tape._ptr, defs, -1, ffi.new("int[]", 1)) == lib.PG_EINVAL

    rc, ids = define(e0_deriv=2)  # a -> the existing sin, b -> a
    assert rc == 0 and ids == [existing + 1, existing + 2, existing]
    b = tape._term(lib.pg_call(tape._ptr, ids[1], x.index))
    assert pg.grad(b, x).value == math.exp(0.5)  # b' is a, which calls exp
    assert pg.grad(pg.grad(b, x), x).value == math.sin(0.5)  # and a' is the existing sin
    rc, ids = define(e1_deriv=-1, e1_level=2**31 - 1)  # b: no link, the (2**31 - 1)-th derivative
    b = tape._term(lib.pg_call(tape._ptr, ids[1], x.index))
    with pytest.raises(pg.DerivativeError, match="past the last one counted"):
        pg.grad(b, x)  # its derivative, made from its next order, would be one more
