"""Whole tapes: extend and to_arrays, pickle and copy.deepcopy.

A copy must be the same tape bit for bit: the same nodes, names, values of
leaves and constants, and function table (links and derivative orders made
by pyrograd.grad included), so that every value, gradient and further graph
built on it is the same as on the original.
"""
import copy
import ctypes
import ctypes.util
import math
import pathlib
import pickle
import re
import subprocess
import sys

import cffi
import numpy as np
import pytest

import pyrograd as pg
from _pyrograd_core import ffi, lib
from reference import cube, d2cube, dcube


# ---- module-level functions: what pickle can save -----------------------------------

def fails(x):
    raise ValueError("fails was called")


def returns_a_string(x):
    return "1.0"


# A chain of ops that know their own derivatives: sin' = cos, cos' = -sin, ...
def neg_sin(x):
    return -math.sin(x)


def neg_cos(x):
    return -math.cos(x)


NEG_COS = pg.unary("neg_cos", neg_cos, math.sin)
NEG_SIN = pg.unary("neg_sin", neg_sin, NEG_COS)
COS = pg.unary("cos_op", math.cos, NEG_SIN)
SIN = pg.unary("sin_op", math.sin, COS)


# ---- helpers ------------------------------------------------------------------------

def bits(array):
    return np.asarray(array, dtype=np.float64).view(np.uint64)


def all_values(tape):
    return tape.values([tape[i] for i in range(len(tape))])


def function_table(tape):
    """(name, deriv, base, level, which orders are set) of every user function."""
    deriv, base, level = ffi.new("int *"), ffi.new("int *"), ffi.new("int *")
    native, callback, ud = ffi.new("pg_native_fn *"), ffi.new("pg_callback_fn *"), ffi.new("void **")
    name = ffi.new("const char **")
    table = []
    for fn in range(lib.pg_fn_count(tape._ptr)):
        assert lib.pg_fn_info(tape._ptr, fn, deriv, base, level) == 0
        orders = []
        for order in range(lib.PG_FN_ORDERS):
            assert lib.pg_fn_get(tape._ptr, fn, order, native, callback, ud) == 0
            orders.append(native[0] != ffi.NULL or callback[0] != ffi.NULL)
        assert lib.pg_fn_name(tape._ptr, fn, name) == 0
        table.append((ffi.string(name[0]).decode(), deriv[0], base[0], level[0], orders))
    return table


def assert_same_tape(got, want):
    """Same nodes, names, stored values, function table, and the same value of every node."""
    a, b = got.to_arrays(), want.to_arrays()
    for key in ("op", "a", "b"):
        assert np.array_equal(a[key], b[key]), key
    assert np.array_equal(bits(a["value"]), bits(b["value"]))
    assert a["names"] == b["names"]
    assert function_table(got) == function_table(want)
    assert np.array_equal(bits(all_values(got)), bits(all_values(want)))


def every_op_tape():
    """A tape with every op kind, names, and awkward values (-0.0, inf, NaN, subnormal)."""
    tape = pg.Tape()
    x, y = tape.term("x", 0.7), tape.term("ÿ ∂y", 1.3)
    tape.const(-0.0, name="minus zero")
    tape.term("inf", math.inf)
    tape.term("nan", math.nan)
    tape.const(5e-324, name="tiny")
    tape.term()  # unnamed
    parts = [x + y, x - y, x * y, x / y, x ** y, x ** 2.5, pg.maximum(x, y), pg.minimum(x, y),
             -x, abs(x), pg.exp(x), pg.log(y), pg.sqrt(y), pg.sin(x), pg.cos(x), pg.tan(x),
             pg.tanh(x), pg.sigmoid(x), pg.relu(x), pg.softplus(x), x.apply("cube", cube, dcube, d2cube)]
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    out = total * SIN(y)
    # derivative graphs add STEP, SIGN, DMAX and XLOG nodes and derived functions
    grads = pg.grad(out, [x, y])
    second = pg.grad(grads[0], [x, y])
    ops = set(tape.to_arrays()["op"].tolist())
    assert ops == set(range(lib.pg_op_count())), "every op kind is on the tape"
    return tape, x, y, out, grads + second


# ---- extend and to_arrays -------------------------------------------------------------

def test_extend_copies_what_operators_built():
    tape = pg.Tape()
    x, y = tape.term("x", 0.7), tape.term("y", 1.3)
    out = pg.tanh(x * y + x ** 3) / pg.maximum(x, y) - pg.log(y) ** y
    grad = pg.grad(out, [x, y])  # STEP, SIGN, DMAX, XLOG and friends
    copy_ = pg.Tape()
    assert copy_.extend(**tape.to_arrays()) == range(len(tape))
    assert_same_tape(copy_, tape)
    assert copy_[grad[1].index].value == grad[1].value
    # CALL nodes need their function on the target tape
    x.apply("cube", cube, dcube)
    with pytest.raises(pg.PyrogradError, match="function 0 does not exist"):
        pg.Tape().extend(**tape.to_arrays())


def test_extend_builds_a_graph_and_returns_its_range():
    tape = pg.Tape()
    a = tape.term("a", 2.0)
    new = tape.extend(["leaf", "const", "mul", "add", "powc", "exp"],
                      a=[0, 0, 0, 3, 4, 5], b=[0, 0, 1, 2, 2, 0],
                      value=[3.0, 10.0, 0.0, 0.0, 0.0, 0.0], names={1: "b", 2: "ten"})
    assert new == range(1, 7)
    b, ten = tape[1], tape[2]
    assert (b.name, ten.name, b.is_leaf, ten.is_leaf) == ("b", "ten", True, False)
    # node 3 = a * b, 4 = a*b + ten, 5 = (a*b + ten) ** ten, 6 = exp(node 5)
    assert tape[4].value == 16.0
    assert tape[5].value == 16.0 ** 10
    assert tape[-2].value == 16.0 ** 10
    tape[4].backprop()
    assert (a.grad, b.grad) == (3.0, 2.0)
    b.set(-1.0)  # leaves made by extend are leaves like any other
    assert tape[4].value == 8.0
    assert tape[4].derive(a) == -1.0


def test_extend_of_nothing():
    tape = pg.Tape()
    assert tape.extend([]) == range(0, 0)
    assert tape.extend(np.zeros(0, np.uint8)) == range(0, 0)
    assert len(tape) == 0


def test_extend_stores_zero_for_operands_an_op_does_not_have():
    tape = pg.Tape()
    tape.extend(["leaf", "exp"], a=[7, 0], b=[9, 5], value=[1.0, 123.0])
    arrays = tape.to_arrays()
    assert arrays["a"].tolist() == [0, 0] and arrays["b"].tolist() == [0, 0]
    assert arrays["value"].tolist() == [1.0, 0.0]  # op values are computed, not taken
    assert tape[1].value == math.e


def test_extend_with_op_codes_as_a_numpy_array():
    tape = pg.Tape()
    x = tape.term("x", 3.0)
    codes = np.array([lib.pg_op_code(b"NEG"), lib.pg_op_code(b"MUL")], np.uint8)
    tape.extend(codes, a=np.array([0, 1], np.uint32), b=np.array([0, 0], np.uint32))
    assert tape[-1].value == -9.0
    assert tape[-1].derive(x) == -6.0


def test_extend_grows_geometrically_and_reserve_exactly():
    tape = pg.Tape()
    tape.reserve(1000)
    memory = tape.memory
    tape.extend(["leaf"] * 1000)
    assert tape.memory == memory  # no slack beyond the reservation
    for _ in range(50):
        tape.extend(["leaf"] * 10)
    assert len(tape) == 1500
    assert tape.memory < 1500 * 2 * 25 + 2000


def test_names_added_one_extend_at_a_time():
    tape = pg.Tape()
    for k in range(300):
        tape.extend(["leaf", "const"], value=[k, -k], names={2 * k: f"leaf {k}", 2 * k + 1: f"const {k}"})
    assert tape.to_arrays()["names"] == {i: f"{'leaf' if i % 2 == 0 else 'const'} {i // 2}" for i in range(600)}
    assert tape[599].name == "const 299" and tape[599].value == -299.0


class FailingAllocator:
    """libc realloc and free behind the tape, failing from the k-th allocation on."""

    def __init__(self):
        libc = cffi.FFI()
        libc.cdef("void *realloc(void *, size_t); void free(void *);")
        self.libc = libc.dlopen(None)
        self.callback = ffi.callback("pg_alloc_fn", self._alloc)
        self.fail_from = None
        self.count = 0

    def _alloc(self, ud, ptr, size):
        if size == 0:
            self.libc.free(ptr)
            return ffi.NULL
        self.count += 1
        if self.fail_from is not None and self.count >= self.fail_from:
            return ffi.NULL
        return ffi.cast("void *", self.libc.realloc(ptr, size))

    def tape(self):
        from pyrograd._binding import ParkedErrors

        tape = pg.Tape.__new__(pg.Tape)
        tape._ptr = ffi.gc(lib.pg_tape_new_with_alloc(self.callback, ffi.NULL), lib.pg_tape_free)
        tape._pending = ParkedErrors()
        tape._functions = {}
        tape._alive = {}
        return tape


_allocator = FailingAllocator()  # outlives every tape that uses it


def test_extend_that_runs_out_of_memory_appends_nothing():
    """Every allocation extend makes (names, their copies, the node arrays)
    fails in turn: each failure is a MemoryError and leaves the tape as it was."""
    alloc = _allocator
    tape = alloc.tape()
    x = tape.term("x", 2.0)
    y = x * x
    tape.extend(["leaf"] * 20, value=np.arange(20.0), names={k: f"n{k}" for k in range(2, 22)})
    before = tape.to_arrays()
    failures = 0
    for k in range(1, 100):
        alloc.count, alloc.fail_from = 0, k
        try:
            tape.extend(["leaf"] * 100 + ["neg"], a=[0] * 100 + [1], value=np.ones(101),
                        names={len(tape) + j: f"m{j}" for j in range(40)})
        except MemoryError:
            failures += 1
            alloc.fail_from = None
            after = tape.to_arrays()
            assert after["names"] == before["names"]
            assert all(np.array_equal(after[key], before[key]) for key in ("op", "a", "b", "value"))
            assert y.value == 4.0
            continue
        finally:
            alloc.fail_from = None
        break
    assert failures >= 40  # the names' array, their copies and the node arrays all failed once
    assert len(tape) == 2 + 20 + 101 and tape[-1].value == -4.0 and tape[22 + 39].name == "m39"
    del tape, x, y


def test_to_arrays_of_a_range():
    tape, *_ = every_op_tape()
    whole = tape.to_arrays()
    part = tape.to_arrays(2, 6)
    assert np.array_equal(part["op"], whole["op"][2:6])
    assert part["names"] == {k: v for k, v in whole["names"].items() if 2 <= k < 6}
    with pytest.raises(IndexError):
        tape.to_arrays(5, 2)
    with pytest.raises(IndexError):
        tape.to_arrays(0, len(tape) + 1)


def test_tape_indexing():
    tape = pg.Tape()
    a, b = tape.term("a", 1.0), tape.term("b", 2.0)
    assert tape[0] == a and tape[1] == b and tape[-1] == b and tape[-2] == a
    for bad in (2, -3):
        with pytest.raises(IndexError):
            tape[bad]
    with pytest.raises(TypeError):
        tape["a"]
    with pytest.raises(TypeError):
        tape[1.0]


# ---- pickle -----------------------------------------------------------------------

@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trips_every_op_bit_for_bit(protocol):
    tape, x, y, out, grads = every_op_tape()
    x.set(0.4)  # values made stale by a set: the copy evaluates at the new value
    clone = pickle.loads(pickle.dumps(tape, protocol))
    assert clone is not tape
    assert_same_tape(clone, tape)
    out.backprop()
    clone[out.index].backprop()
    assert np.array_equal(bits(clone.grads([clone[i] for i in range(len(clone))])),
                          bits(tape.grads([tape[i] for i in range(len(tape))])))
    for g in grads:
        assert clone[g.index].value == g.value


def test_a_term_brings_its_whole_tape_and_terms_share_one():
    tape, x, y, out, grads = every_op_tape()
    alone = pickle.loads(pickle.dumps(x))
    assert len(alone.tape) == len(tape)
    assert_same_tape(alone.tape, tape)
    x2, out2, tape2, g2 = pickle.loads(pickle.dumps([x, out, tape, grads[0]]))
    assert x2.tape is out2.tape is tape2 is g2.tape
    assert (x2.index, out2.index, g2.index) == (x.index, out.index, grads[0].index)
    assert out2.value == out.value
    x2.set(1.5)  # the copy is a tape of its own
    assert out2.value != out.value
    assert g2.value == pg.grad(out2, x2).value


def test_pickled_user_functions_keep_working_and_failing():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    y = x.apply("cube", cube, dcube, d2cube)
    bad = x.apply("fails", fails, dcube)
    clone = pickle.loads(pickle.dumps([y, bad]))
    y2, bad2 = clone
    x2 = y2.tape[0]
    assert y2.value == 1.0
    with pytest.raises(ValueError, match="fails was called"):
        bad2.value
    assert y2.derive(x2) == 3.0  # and the tape still works
    x2.set(2.0)
    assert y2.value == 8.0


def test_pickled_unary_chains_differentiate_to_their_depth():
    tape = pg.Tape()
    x = tape.term("x", 0.3)
    y = SIN(x)
    first = pg.grad(y, x)
    x2, y2, first2 = pickle.loads(pickle.dumps([x, y, first]))
    d = first
    d2 = first2
    for _ in range(3):
        d, d2 = pg.grad(d, x), pg.grad(d2, x2)
        assert d.value == d2.value
    assert d2.value == math.sin(0.3)  # sin'''' = sin
    assert_same_tape(x2.tape, tape)


def test_applying_the_same_function_again_reuses_it_after_a_pickle():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    x.apply("cube", cube, dcube)
    x2 = pickle.loads(pickle.dumps(x))
    count = lib.pg_fn_count(x2.tape._ptr)
    y2 = x2.apply("cube", cube, dcube)
    assert lib.pg_fn_count(x2.tape._ptr) == count
    assert y2.value == 8.0


def test_derivative_errors_after_a_pickle_name_the_users_function():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    first = pg.grad(x.apply("cube", cube, dcube, d2cube), x)  # makes the function cube'
    x2, first2 = pickle.loads(pickle.dumps([x, first]))
    second2 = pg.grad(first2, x2)
    assert second2.value == 12.0
    with pytest.raises(pg.DerivativeError) as on_copy:
        pg.grad(second2, x2)
    with pytest.raises(pg.DerivativeError) as on_original:
        pg.grad(pg.grad(first, x), x)
    assert str(on_copy.value) == str(on_original.value)
    assert "'cube'" in str(on_copy.value) and "order 3" in str(on_copy.value)


def test_lambdas_do_not_pickle_and_the_error_names_the_op():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    x.apply("cube", cube, dcube)
    y = x.apply("square", lambda v: v * v, lambda v: 2 * v)
    with pytest.raises(pickle.PicklingError, match="'square'"):
        pickle.dumps(tape)
    with pytest.raises(pickle.PicklingError, match="'square'"):
        pickle.dumps(y)

    def local(v):
        return v

    tape2 = pg.Tape()
    tape2.term("x", 1.0).apply("local_op", local, cube)
    with pytest.raises(pickle.PicklingError, match="'local_op'"):
        pickle.dumps(tape2)
    assert (y + 1).value == 5.0  # the tape still works


_cmath = cffi.FFI()
_cmath.cdef("double sin(double); double cos(double);")
_cmath_lib = _cmath.dlopen(None)


def _ctypes_sin():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.sin.restype, libm.sin.argtypes = ctypes.c_double, [ctypes.c_double]
    return libm.sin


@pytest.mark.parametrize("kind", ["cffi", "ctypes"])
def test_native_functions_do_not_pickle_but_deepcopy(kind):
    f = _cmath_lib.sin if kind == "cffi" else _ctypes_sin()
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    y = x.apply("native_sin", f, math.cos)
    with pytest.raises(pickle.PicklingError, match="'native_sin'.*native function pointer"):
        pickle.dumps(y)
    assert y.value == math.sin(0.5)
    clone = copy.deepcopy(y)
    assert clone.tape is not tape
    del f, tape, x, y  # the copy keeps the native function alive
    import gc
    gc.collect()
    assert clone.value == math.sin(0.5)
    assert clone.derive(clone.tape[0]) == math.cos(0.5)


def test_damaged_pickles_are_refused():
    tape = pg.Tape()
    tape.term("x", 1.0)
    func, (state,) = tape.__reduce__()
    with pytest.raises(ValueError):
        func({**state, "format": 99})
    with pytest.raises(ValueError, match="damaged"):
        func({**state, "values": b""})
    # a node that refers to a later one: the C core's checks refuse it
    bad = {**state, "op": bytes([lib.pg_op_code(b"EXP")]), "values": b""}
    bad["a"] = np.array([5], "<u4").tobytes()
    with pytest.raises(pg.PyrogradError, match="not an earlier node"):
        func(bad)


# ---- deepcopy --------------------------------------------------------------------------

def test_deepcopy_shares_lambdas_and_is_independent():
    tape = pg.Tape()
    calls = []
    x = tape.term("x", 2.0)
    y = x.apply("square", lambda v: calls.append(v) or v * v, lambda v: 2 * v)
    z = y * x
    x_copy, z_copy = copy.deepcopy([x, z])
    assert x_copy.tape is z_copy.tape is not tape
    assert_same_tape(z_copy.tape, tape)
    x_copy.set(3.0)
    assert z_copy.value == 27.0
    assert z.value == 8.0
    assert 3.0 in calls  # the copy called the same lambda
    z_copy.backprop()
    assert x_copy.grad == 27.0
    assert copy.copy(tape) is not tape and len(copy.copy(tape)) == len(tape)


def test_copy_of_a_term_is_a_term_of_the_same_tape():
    tape = pg.Tape()
    x = tape.term("x", 2.0)
    shallow = copy.copy(x)
    assert shallow == x and shallow.tape is tape
    deep = copy.deepcopy(x)
    assert deep.tape is not tape and deep.value == 2.0 and deep.name == "x"


# ---- doctored pickles ------------------------------------------------------------------

def _registered_tape():
    """A tape with a plain user function, a unary chain and a derived function."""
    tape = pg.Tape()
    x = tape.term("x", 0.3)
    y = x.apply("cube", cube, dcube, d2cube) + SIN(x)
    pg.grad(pg.grad(y, x), x)  # makes cube' and cube'', links the chain
    return tape


def _state(tape):
    return copy.deepcopy(tape.__reduce__()[1][0])  # a state of one's own to doctor


def _fn(state, name):
    return next(fn for fn, entry in enumerate(state["functions"]) if entry[0] == name)


def _change_function(state, which, **fields):
    fn = _fn(state, which)
    entry = dict(zip(("name", "slots", "deriv", "base", "level"), state["functions"][fn]))
    entry.update(fields)
    state["functions"][fn] = tuple(entry.values())


def _change_registration(state, which, **fields):
    k = next(k for k, r in enumerate(state["registrations"]) if r[0] == which)
    entry = dict(zip(("name", "f", "df", "d2f", "fn"), state["registrations"][k]))
    entry.update(fields)
    state["registrations"][k] = tuple(entry.values())


def _call_node(state, fn):
    state["op"] += bytes([lib.pg_op_code(b"CALL")])
    state["a"] += np.array([0], "<u4").tobytes()
    state["b"] += np.array([fn], "<u4").tobytes()


DOCTORED = {
    "no registrations": (lambda s: s.pop("registrations"), "no registrations"),
    "no callables": (lambda s: s.pop("callables"), "no callables"),
    "registrations not a list": (lambda s: s.update(registrations={}), "registrations are not a list"),
    "registration of another function": (
        lambda s: _change_registration(s, "cube", fn=_fn(s, "sin_op")), "registration of 'cube' does not match"),
    "registration with another f": (
        lambda s: _change_registration(s, "cube", f=dcube), "registration of 'cube' does not match"),
    "registration with another d2f": (
        lambda s: _change_registration(s, "cube", d2f=None), "registration of 'cube' does not match"),
    "registration of function -1": (lambda s: _change_registration(s, "cube", fn=-1), "registration"),
    "registration of a huge function": (lambda s: _change_registration(s, "cube", fn=2**40), "registration"),
    "registration of function True": (lambda s: _change_registration(s, "cube", fn=True), "registration"),
    "registration of a short tuple": (lambda s: s["registrations"].append(("cube", cube)), "registration"),
    "slot past the callables": (lambda s: _change_function(s, "cube", slots=[99, None, None]), "slot 0"),
    "slot -1": (lambda s: _change_function(s, "cube", slots=[-1, None, None]), "slot 0"),
    "slot True": (lambda s: _change_function(s, "cube", slots=[True, None, None]), "slot 0"),
    "slot a string": (lambda s: _change_function(s, "cube", slots=[0, "f", None]), "slot 1"),
    "two slots": (lambda s: _change_function(s, "cube", slots=[0, 1]), "slots"),
    "slot another callable": (
        lambda s: _change_function(s, "cube", slots=[s["functions"][_fn(s, "cube")][1][1]] * 3),
        "registration of 'cube' does not match"),
    "derivative past the functions": (lambda s: _change_function(s, "cube", deriv=99), "derivative of function"),
    "derivative -2": (lambda s: _change_function(s, "cube", deriv=-2), "derivative of function"),
    "derivative not made of the next orders": (
        lambda s: _change_function(s, "cube", deriv=_fn(s, "cube")), "not made of its next orders"),
    "chain linked to an unregistered function": (
        lambda s: _change_function(s, "sin_op", deriv=_fn(s, "cube'")), "not the function of its df"),
    "chain linked to nothing": (lambda s: _change_function(s, "sin_op", deriv=-1), "not the function of its df"),
    "base -1": (lambda s: _change_function(s, "cube'", base=-1), "base of function"),
    "base past the functions": (lambda s: _change_function(s, "cube'", base=2**31), "base of function"),
    "level -1": (lambda s: _change_function(s, "cube'", level=-1), "level of function"),
    "level 2**31": (lambda s: _change_function(s, "cube'", level=2**31), "level of function"),
    "level 1.0": (lambda s: _change_function(s, "cube'", level=1.0), "level of function"),
    "name with a NUL": (lambda s: _change_function(s, "cube'", name="cube\0"), "name of function"),
    "name not a str": (lambda s: _change_function(s, "cube'", name=b"cube'"), "name of function"),
    "function not a tuple": (lambda s: s["functions"].append(None), "function"),
    "callable not callable": (lambda s: s["callables"].__setitem__(0, (1.5, "cube")), "callable 0"),
    "callable not a pair": (lambda s: s["callables"].__setitem__(0, cube), "callable 0"),
    "node calling an absent function": (lambda s: _call_node(s, 50), "calls function 50"),
}


@pytest.mark.parametrize("name", sorted(DOCTORED))
def test_doctored_pickles_are_refused_naming_the_problem(name):
    """restore trusted the function table and registrations of a pickle: a
    slot or registration that pointed at the wrong place left C calling
    freed callback wrappers, or apply reusing a function that computes
    something else.  Each is refused now, before the tape is used."""
    doctor, problem = DOCTORED[name]
    state = _state(_registered_tape())
    doctor(state)
    with pytest.raises((pickle.UnpicklingError, ValueError), match=re.escape(problem)):
        pg.bulk.restore(state)


_WITHOUT_REGISTRATIONS = r'''
import gc, math, pickle, copy
import pyrograd as pg
import TEST_MODULE as tb

tape = tb._registered_tape()
state = tb._state(tape)
state["registrations"] = []  # allowed: they only let apply reuse a function
clone = pg.bulk.restore(state)
gc.collect()  # the callback wrappers live as long as the tape, registered or not
x = clone[0]
values = clone.values([clone[i] for i in range(len(clone))])
assert values.tolist() == tape.values([tape[i] for i in range(len(tape))]).tolist()
y = x.apply("cube", tb.cube, tb.dcube, tb.d2cube) + tb.SIN(x)  # registered anew
assert y.value == tb.cube(0.3) + math.sin(0.3)
assert pg.grad(pg.grad(y, x), x).value == tb.d2cube(0.3) - math.sin(0.3)
copy.deepcopy(clone)
pickle.loads(pickle.dumps(clone))
print("ok")
'''


def test_a_pickle_without_registrations_keeps_its_callbacks_alive():
    """restore kept the callback wrappers alive only through the pickle's
    registrations: without them C held freed handles, and the first sweep
    aborted the interpreter.  In a subprocess: the old code aborts."""
    here = pathlib.Path(__file__)
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_REGISTRATIONS.replace("TEST_MODULE", here.stem)],
                          capture_output=True, text=True, timeout=120, cwd=here.parent)
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-3000:]}"
    assert proc.stdout.strip() == "ok"


def test_a_derivative_level_past_int_max_is_an_error():
    """A pickle may say a derived function is the (2**31 - 1)-th derivative:
    pg.grad then made the next one's level by a signed int overflow (UB).
    Now the level is range-checked where it grows."""
    tape = pg.Tape()
    x = tape.term("x", 0.3)
    first = pg.grad(x.apply("cube", cube, dcube, d2cube), x)  # calls cube', level 1
    state = _state(tape)
    _change_function(state, "cube'", level=2**31 - 1)
    clone = pg.bulk.restore(state)
    assert clone[first.index].value == dcube(0.3)
    n = len(clone)
    with pytest.raises(pg.DerivativeError, match="past the last one counted"):
        pg.grad(clone[first.index], clone[0])
    assert len(clone) == n


def test_a_copy_refuses_a_native_function_no_registration_holds():
    """deepcopy passes native function pointers along; each must be held by
    an object a registration keeps (else nothing keeps it alive)."""
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    x.apply("native_sin", _cmath_lib.sin, math.cos)
    state = pg.bulk.state(tape, for_pickle=False)
    state["registrations"] = []
    with pytest.raises(pickle.UnpicklingError, match="native function that no registration holds"):
        pg.bulk.restore(state)
