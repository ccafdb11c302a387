"""Every error path: exceptions (never crashes), IEEE semantics, lifetimes, memory."""
import gc
import math
import warnings
import weakref

import cffi
import pytest

import pyrograd as pg
from _pyrograd_core import ffi, lib


def test_exception_hierarchy():
    for error in (pg.TapeMismatchError, pg.NotALeafError, pg.TapeBusyError, pg.DerivativeError):
        assert issubclass(error, pg.PyrogradError)
    assert issubclass(pg.PyrogradError, Exception)
    assert issubclass(pg.TapeMismatchError, ValueError)
    assert issubclass(pg.NotALeafError, TypeError)


# ---- mixing tapes -----------------------------------------------------------------

@pytest.mark.parametrize(
    "combine",
    [
        lambda a, b: a + b, lambda a, b: b + a, lambda a, b: a - b, lambda a, b: a * b,
        lambda a, b: a / b, lambda a, b: a ** b, lambda a, b: b ** a,
        pg.maximum, pg.minimum, lambda a, b: pg.maximum(b, a), lambda a, b: a.maximum(b),
        lambda a, b: a.minimum(b),
    ],
)
def test_mixing_tapes_in_operators(combine):
    t1, t2 = pg.Tape(), pg.Tape()
    a, b = t1.term("a", 1.0), t2.term("b", 2.0)
    n1, n2 = len(t1), len(t2)
    with pytest.raises(pg.TapeMismatchError) as excinfo:
        combine(a, b)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value)
    assert (len(t1), len(t2)) == (n1, n2)
    assert (a + 1).value == 2.0 and (b + 1).value == 3.0


def test_mixing_tapes_in_derive():
    t1, t2 = pg.Tape(), pg.Tape()
    a, b = t1.term("a", 1.0), t2.term("b", 2.0)
    y = a * a
    with pytest.raises(pg.TapeMismatchError):
        y.derive(b)
    with pytest.raises(ValueError):
        (b * b).derive(a)
    assert y.derive(a) == 2.0


# ---- set on non-leaves ------------------------------------------------------------

def test_set_on_an_op_or_constant():
    tape = pg.Tape()
    a = tape.term("a", 1.0)
    k = tape.const(2.0)
    y = a * k
    for term in (y, k):
        with pytest.raises(pg.NotALeafError) as excinfo:
            term.set(5.0)
        assert isinstance(excinfo.value, TypeError)
        assert "leaf" in str(excinfo.value)
    assert (y.value, k.value) == (2.0, 2.0)
    a.set(3.0)
    assert y.value == 6.0


# ---- bad argument types -----------------------------------------------------------

@pytest.mark.parametrize(
    "action",
    [
        lambda t, x: x + "x",
        lambda t, x: "x" + x,
        lambda t, x: x * None,
        lambda t, x: None - x,
        lambda t, x: x / [1.0],
        lambda t, x: x ** "2",
        lambda t, x: "2" ** x,
        lambda t, x: x ** 1j,
        lambda t, x: pow(x, 2, 3),
        lambda t, x: t.term(name=3),
        lambda t, x: t.term(b"a", 1.0),
        lambda t, x: t.term("a", "1.0"),
        lambda t, x: t.term("a", None),
        lambda t, x: t.term("a", 1j),
        lambda t, x: t.const("1"),
        lambda t, x: t.const(1.0, name=7),
        lambda t, x: x.set("x"),
        lambda t, x: x.set(None),
        lambda t, x: x.set(x),
        lambda t, x: x.derive(1.0),
        lambda t, x: x.derive("x"),
        lambda t, x: pg.exp("x"),
        lambda t, x: pg.log(None),
        lambda t, x: pg.maximum(x, "a"),
        lambda t, x: pg.minimum("a", x),
        lambda t, x: pg.maximum("a", "b"),
    ],
)
def test_bad_argument_types_are_type_errors(action):
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    n = len(tape)
    with pytest.raises(TypeError):
        action(tape, x)
    assert len(tape) == n
    assert x.value == 2.0
    assert (x * x).value == 4.0


@pytest.mark.parametrize("method", ["maximum", "minimum"])
@pytest.mark.parametrize("bad", [None, "a"])
def test_maximum_method_with_a_bad_argument_is_a_type_error(method, bad):
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    with pytest.raises(TypeError):
        getattr(x, method)(bad)


def test_fraction_values_are_numbers():
    from fractions import Fraction

    tape = pg.Tape()
    x = tape.term("x", Fraction(1, 4))
    assert x.value == 0.25
    assert (x + Fraction(1, 2)).value == 0.75


# ---- IEEE semantics ---------------------------------------------------------------

def test_ieee_semantics_without_exceptions():
    tape = pg.Tape()
    zero, one, minus = tape.term("zero", 0.0), tape.term("one", 1.0), tape.term("m", -1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (one / zero).value == math.inf
        assert (minus / zero).value == -math.inf
        assert math.isnan((zero / zero).value)
        assert (1 / zero).value == math.inf
        assert pg.log(zero).value == -math.inf
        assert math.isnan(pg.log(minus).value)
        assert math.isnan(pg.sqrt(minus).value)
        assert pg.exp(one * 1000).value == math.inf
        assert (zero ** -1.0).value == math.inf
        y = pg.sqrt(minus)
        assert math.isnan(y.derive(minus))
        y.backprop()
        assert math.isnan(minus.grad)
        assert math.isnan(pg.maximum(minus, math.nan).value)
        assert pg.log(zero).derive(zero) == math.inf
        # a NaN result is a value, not an error: later reads still work
        assert (one + one).value == 2.0


def test_nan_leaf_is_a_value():
    tape = pg.Tape()
    x = tape.term("x", math.nan)
    y = x * 2
    assert math.isnan(y.value)
    x.set(1.0)
    assert y.value == 2.0


# ---- lifetimes -----------------------------------------------------------------

def test_terms_keep_their_tape_alive():
    t = pg.Tape().term("a", 1.0)
    gc.collect()
    assert t.value == 1.0
    y = pg.exp(t * 0)
    gc.collect()
    assert y.value == 1.0
    assert len(t.tape) >= 3


def test_tapes_are_freed_when_unreferenced():
    tape = pg.Tape()
    a = tape.term("a", 1.0)
    y = a * a
    ref = weakref.ref(tape)
    del tape
    gc.collect()
    assert ref() is not None  # a and y hold it
    del a, y
    gc.collect()
    assert ref() is None


# ---- memory --------------------------------------------------------------------

def test_absurd_reservation_is_enomem_and_the_tape_still_works():
    tape = pg.Tape()
    a = tape.term("a", 2.0)
    y = a * 3
    assert y.value == 6.0
    assert lib.pg_reserve(tape._ptr, 10 ** 12) == lib.PG_ENOMEM == 1
    assert lib.pg_errcode(tape._ptr) == lib.PG_ENOMEM
    assert ffi.string(lib.pg_errmsg(tape._ptr))
    assert y.value == 6.0
    z = y * a
    assert z.value == 12.0
    assert z.derive(a) == 12.0
    a.set(1.0)
    z.backprop()
    assert a.grad == 6.0


class FailingAllocator:
    """A tape allocator (libc realloc/free) that can be told to fail."""

    def __init__(self):
        self.fail = False
        self.live = 0
        libc = cffi.FFI()
        libc.cdef("void *realloc(void *, size_t); void free(void *);")
        self.libc = libc.dlopen(None)
        self.callback = ffi.callback("pg_alloc_fn", self._alloc)

    def _alloc(self, ud, ptr, size):
        if size == 0:
            if ptr != ffi.NULL:
                self.live -= 1
                self.libc.free(ptr)
            return ffi.NULL
        if self.fail:
            return ffi.NULL
        if ptr == ffi.NULL:
            self.live += 1
        return ffi.cast("void *", self.libc.realloc(ptr, size))

    def tape(self):
        ptr = lib.pg_tape_new_with_alloc(self.callback, ffi.NULL)
        assert ptr != ffi.NULL
        tape = pg.Tape.__new__(pg.Tape)
        # the same fields Tape.__init__ sets, with our allocator underneath
        tape._ptr = ffi.gc(ptr, lib.pg_tape_free)
        tape._pending = []
        tape._functions = {}
        tape._alive = {}
        return tape


_allocator = FailingAllocator()  # must outlive every tape that uses it


def test_out_of_memory_raises_memory_error_and_keeps_the_tape():
    alloc = _allocator
    tape = alloc.tape()
    a = tape.term("a", 2.0)
    y = a * a
    assert y.value == 4.0
    alloc.fail = True
    try:
        built = 0
        with pytest.raises(MemoryError):
            for _ in range(10_000):
                y = y + a
                built += 1
        n = len(tape)
        with pytest.raises(MemoryError):
            y * 2.0  # a number operand: constant and op, or neither
        with pytest.raises(MemoryError):
            tape.term("b", 1.0)
        with pytest.raises(MemoryError):
            pg.exp(y)
        assert len(tape) == n
        # values and backprop need no new memory
        assert y.value == 4.0 + 2.0 * built
        y.backprop()
        assert a.grad == 4.0 + built
        # forward-mode derive needs tangents: out of memory, not a crash
        with pytest.raises(MemoryError):
            y.derive(a)
    finally:
        alloc.fail = False
    assert y.derive(a) == 4.0 + built
    z = y * 2.0
    assert z.value == 2 * (4.0 + 2.0 * built)
    assert len(tape) > n
    del tape, a, y, z
    gc.collect()


def test_failing_allocator_frees_everything():
    alloc = FailingAllocator()
    tape = alloc.tape()
    x = tape.term("x", 1.0)
    for k in range(1000):
        x = x * 1.0 + tape.term(f"leaf{k}", 0.0)
    x.apply("f", math.sin, math.cos).value
    assert alloc.live > 0
    del tape, x
    gc.collect()
    assert alloc.live == 0
