"""The misuse matrix: every way a caller can get it wrong gives a clear
exception, and the tape works afterwards exactly as before.

Each row of a table below is one misuse.  The check after it is always the
same: the tape has the nodes, values and grads it had, and a value, a
derive, a backprop, an eval_batch and a grad_batch (one thread and two) give
the results they gave before the misuse.  Cases already in test_errors.py,
test_batch.py, test_apply.py and test_derivatives.py are not repeated here.
"""
import math
import warnings

import numpy as np
import pytest

import pyrograd as pg
from _pyrograd_core import lib


class Boom(Exception):
    pass


class Model:
    """A small tape with a user function whose f and df can be made to misbehave."""

    def __init__(self):
        self.misbehave = None  # (which of "f"/"df", how) or None
        tape = self.tape = pg.Tape()
        self.x, self.w = tape.term("x", 0.5), tape.term("w", -1.5)
        self.h = self.x.apply("user_op", self._f, self._df)
        self.y = pg.tanh(self.h * self.w + self.x) + self.w ** 2
        self.data = np.linspace(-1.0, 1.0, 16).reshape(16, 1)
        self.n = len(tape)  # a misuse appends nothing; other tests may append after these
        self.baseline = self.results()

    def _act(self, which, v, good):
        if self.misbehave is None or self.misbehave[0] != which:
            return good
        how = self.misbehave[1]
        if how == "raises":
            raise Boom(which)
        if how == "returns None":
            return None
        if how == "returns a string":
            return "1.0"
        if how == "builds a node":
            self.x + 1.0
        elif how == "sets a leaf":
            self.w.set(v)
        elif how == "backprops":
            self.y.backprop()
        elif how == "makes a leaf":
            self.tape.term("z", v)
        elif how == "computes a derivative graph":
            pg.grad(self.y, self.x)
        return good

    def _f(self, v):
        return self._act("f", v, v * v)

    def _df(self, v):
        return self._act("df", v, 2.0 * v)

    def results(self):
        """Everything the tape answers, as arrays: compared bit for bit."""
        tape, x, w, y = self.tape, self.x, self.w, self.y
        nodes = [tape[i] for i in range(self.n)]
        values = tape.values(nodes)
        y.backprop()
        grads = tape.grads(nodes)
        derive = np.array([y.derive(x), y.derive(w)])
        batch = {threads: tape.eval_batch(y, [x], self.data, threads=threads) for threads in (1, 2)}
        loss = {threads: tape.grad_batch(y, [x], self.data, [w, x], threads=threads) for threads in (1, 2)}
        arrays = tape.to_arrays(0, self.n)
        flat = [values, grads, derive, batch[1], batch[2], np.array([loss[1][0], loss[2][0]]), loss[1][1],
                loss[2][1], arrays["value"]]
        return [np.asarray(a).view(np.uint64) for a in flat] + [arrays["op"], arrays["a"], arrays["b"]]

    def assert_as_before(self):
        self.misbehave = None
        after = self.results()
        assert len(after) == len(self.baseline)
        for got, want in zip(after, self.baseline):
            assert np.array_equal(got, want)


@pytest.fixture
def model():
    return Model()


def _check(model, action, error, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from numpy either
        with pytest.raises(error, match=match) as excinfo:
            action(model)
    assert str(excinfo.value)
    assert len(model.tape) == model.n
    model.assert_as_before()


# ---- callbacks that misbehave, in every kind of sweep ----------------------------------

# How each misbehaviour is reported.
MISBEHAVIOURS = {
    "raises": (Boom, None),
    "returns None": (TypeError, "returned NoneType, expected a float"),
    "returns a string": (TypeError, "returned str"),
    "builds a node": (pg.TapeBusyError, "the tape is in use"),
    "sets a leaf": (pg.TapeBusyError, "the tape is in use"),
    "backprops": (pg.TapeBusyError, "the tape is in use"),
    "makes a leaf": (pg.TapeBusyError, "the tape is in use"),
    "computes a derivative graph": (pg.TapeBusyError, "the tape is in use"),
}

# Where the misbehaving function runs: (which of f/df, the call).
SWEEPS = {
    "value": ("f", lambda m: m.y.value),
    "derive": ("df", lambda m: m.y.derive(m.x)),
    "backprop": ("df", lambda m: m.y.backprop()),
    "eval_batch, 1 thread": ("f", lambda m: m.tape.eval_batch(m.y, [m.x], m.data, threads=1)),
    "eval_batch, 2 threads": ("f", lambda m: m.tape.eval_batch(m.y, [m.x], m.data, threads=2)),
    "grad_batch f, 1 thread": ("f", lambda m: m.tape.grad_batch(m.y, [m.x], m.data, [m.w], threads=1)),
    "grad_batch f, 2 threads": ("f", lambda m: m.tape.grad_batch(m.y, [m.x], m.data, [m.w], threads=2)),
    "grad_batch df, 1 thread": ("df", lambda m: m.tape.grad_batch(m.y, [m.x], m.data, [m.w], threads=1)),
    "grad_batch df, 2 threads": ("df", lambda m: m.tape.grad_batch(m.y, [m.x], m.data, [m.w], threads=2)),
    "values": ("f", lambda m: m.tape.values([m.y])),
    "jacobian": ("df", lambda m: pg.jacobian([m.y], [m.x, m.w])),
}

# The scalar sweeps' raise, None, string and re-entry are in test_apply.py already.
_COVERED = {(how, where) for how in ("raises", "returns None", "returns a string", "builds a node",
                                     "sets a leaf", "backprops", "makes a leaf")
            for where in ("value", "derive", "backprop")}
_COVERED |= {("raises", where) for where in SWEEPS if "batch" in where}  # test_batch.py
CALLBACK_CASES = [(how, where) for how in MISBEHAVIOURS for where in SWEEPS if (how, where) not in _COVERED]


@pytest.mark.parametrize("how, where", CALLBACK_CASES)
def test_misbehaving_callbacks(model, how, where):
    which, call = SWEEPS[where]
    error, match = MISBEHAVIOURS[how]
    model.x.set(0.5)  # the same value, but stale: a value read calls f again

    def action(m):
        m.misbehave = (which, how)
        call(m)

    _check(model, action, error, match)


# ---- arguments: tapes, dtypes, shapes, layouts, sizes -------------------------------------

def _other_tape():
    other = pg.Tape()
    return other.term("alien", 1.0)


def _copy_of(m):
    import copy

    return copy.deepcopy(m.x)


ARGUMENT_CASES = {
    # terms of two tapes (the operators, derive, batches and grad are in test_errors/test_batch/test_derivatives)
    "set_grads with a term of another tape": (
        lambda m: m.tape.set_grads([m.x, _other_tape()], np.zeros(2)), pg.TapeMismatchError, "another tape"),
    "a term of a deepcopy with one of the original": (
        lambda m: _copy_of(m) * m.x, pg.TapeMismatchError, "different tapes"),
    "grad_batch loss from a deepcopy": (
        lambda m: m.tape.grad_batch(_copy_of(m), [m.x], m.data, [m.w]), pg.TapeMismatchError, "another tape"),
    "optimizer over two tapes": (
        lambda m: pg.optim.SGD([m.w, _other_tape()], lr=0.1), pg.TapeMismatchError, "one tape"),
    # set_grads and set_values arrays (eval_batch and grad_batch data are in test_batch.py)
    "set_grads float32": (
        lambda m: m.tape.set_grads([m.x, m.w], np.zeros(2, np.float32)), TypeError, "float64"),
    "set_grads int": (lambda m: m.tape.set_grads([m.x, m.w], np.zeros(2, np.int64)), TypeError, "float64"),
    "set_grads too long": (lambda m: m.tape.set_grads([m.x, m.w], np.zeros(3)), ValueError, "shape"),
    "set_grads two-dimensional": (
        lambda m: m.tape.set_grads([m.x, m.w], np.zeros((2, 1))), ValueError, "shape"),
    "set_grads strided": (lambda m: m.tape.set_grads([m.x, m.w], np.zeros(4)[::2]), ValueError, "contiguous"),
    "set_values reversed": (lambda m: m.tape.set_values([m.x, m.w], np.zeros(2)[::-1]), ValueError, "contiguous"),
    "set_values a string": (lambda m: m.tape.set_values([m.x, m.w], "00"), TypeError, "numpy"),
    "set_values ragged": (lambda m: m.tape.set_values([m.x, m.w], [[1.0], [1.0, 2.0]]), ValueError, None),
    # extend: every node is checked before any is appended
    "extend: an operand that is not earlier": (
        lambda m: m.tape.extend(["exp"], a=[len(m.tape)]), pg.PyrogradError, "not an earlier node"),
    "extend: a second operand that is later": (
        lambda m: m.tape.extend(["leaf", "add"], a=[0, 0], b=[0, len(m.tape) + 5]),
        pg.PyrogradError, "not an earlier node"),
    "extend: a POWC exponent that is not a constant": (
        lambda m: m.tape.extend(["powc"], a=[0], b=[1]), pg.PyrogradError, "exponent of POWC"),
    "extend: a CALL of no function": (
        lambda m: m.tape.extend(["call"], a=[0], b=[7]), pg.PyrogradError, "function 7 does not exist"),
    "extend: an op code that does not exist": (
        lambda m: m.tape.extend(np.array([255], np.uint8)), pg.PyrogradError, "op 255 does not exist"),
    "extend: an op name that does not exist": (lambda m: m.tape.extend(["plus"]), ValueError, "'plus'"),
    "extend: an op code out of range in a list": (lambda m: m.tape.extend([300]), ValueError, "300"),
    "extend: a float op": (lambda m: m.tape.extend([1.0]), TypeError, "op names or codes"),
    "extend: op as int64 codes": (lambda m: m.tape.extend(np.zeros(1, np.int64)), TypeError, "uint8"),
    "extend: operands as int64": (
        lambda m: m.tape.extend(["exp"], a=np.zeros(1, np.int64)), TypeError, "uint32"),
    "extend: operands as floats": (lambda m: m.tape.extend(["exp"], a=[0.5]), TypeError, "node indices"),
    "extend: a negative operand": (lambda m: m.tape.extend(["exp"], a=[-1]), ValueError, "-1"),
    "extend: operands too short": (lambda m: m.tape.extend(["exp", "exp"], a=[0]), ValueError, "shape"),
    "extend: operands strided": (
        lambda m: m.tape.extend(["exp", "exp"], a=np.zeros(4, np.uint32)[::2]), ValueError, "contiguous"),
    "extend: op two-dimensional": (
        lambda m: m.tape.extend(np.zeros((1, 1), np.uint8)), ValueError, "shape"),
    "extend: values float32": (
        lambda m: m.tape.extend(["leaf"], value=np.zeros(1, np.float32)), TypeError, "float64"),
    "extend: a name on an op node": (
        lambda m: m.tape.extend(["exp"], names={len(m.tape): "e"}), pg.PyrogradError, "not a leaf or constant"),
    "extend: a name on an existing node": (
        lambda m: m.tape.extend(["leaf"], names={0: "again"}), pg.PyrogradError, "not a new node"),
    "extend: a name that is not a str": (
        lambda m: m.tape.extend(["leaf"], names={len(m.tape): b"z"}), TypeError, "str"),
    "extend: a name with a NUL": (
        lambda m: m.tape.extend(["leaf"], names={len(m.tape): "a\0b"}), ValueError, "NUL"),
    "extend: names not a dict": (lambda m: m.tape.extend(["leaf"], names=["z"]), TypeError, "dict"),
    "extend: op not a sequence": (lambda m: m.tape.extend("exp"), TypeError, "numpy array or a list"),
    # absurd sizes
    "reserve 10**12 nodes": (lambda m: m.tape.reserve(10**12), MemoryError, "at most"),
    "reserve 2**70 nodes": (lambda m: m.tape.reserve(2**70), MemoryError, "at most"),
    "reserve -1 nodes": (lambda m: m.tape.reserve(-1), ValueError, "negative"),
    "reserve 1.5 nodes": (lambda m: m.tape.reserve(1.5), TypeError, "number of nodes"),
    "node 10**12": (lambda m: m.tape[10**12], IndexError, "does not exist"),
    "to_arrays past the end": (lambda m: m.tape.to_arrays(0, 10**12), IndexError, "not a range"),
    "eval_batch with 10**12 rows of zeros": (
        lambda m: m.tape.eval_batch(m.y, [m.x], np.broadcast_to(np.zeros(1), (10**12, 1))),
        ValueError, "contiguous"),
}


@pytest.mark.parametrize("case", sorted(ARGUMENT_CASES))
def test_bad_arguments(model, case):
    action, error, match = ARGUMENT_CASES[case]
    _check(model, action, error, match)


def test_absurd_thread_counts_use_the_threads_that_are_useful(model):
    m = model
    rows = len(m.data)
    for threads in (10**6, 2**40):
        assert np.array_equal(m.tape.eval_batch(m.y, [m.x], m.data, threads=threads),
                              m.tape.eval_batch(m.y, [m.x], m.data, threads=rows))
        loss, grads = m.tape.grad_batch(m.y, [m.x], m.data, [m.w], threads=threads)
        want = m.tape.grad_batch(m.y, [m.x], m.data, [m.w], threads=rows)
        assert loss == want[0] and np.array_equal(grads, want[1])
    m.assert_as_before()


@pytest.mark.parametrize("what", ["set_values", "set_grads", "extend", "eval_batch"])
def test_read_only_arrays_are_read(model, what):
    """A read-only array is fine wherever pyrograd only reads it."""
    m = model
    values = np.array([0.25, 0.75])
    values.setflags(write=False)
    if what == "set_values":
        m.tape.set_values([m.x, m.w], values)
        assert (m.x.value, m.w.value) == (0.25, 0.75)
    elif what == "set_grads":
        m.tape.set_grads([m.x, m.w], values)
        assert (m.x.grad, m.w.grad) == (0.25, 0.75)
    elif what == "extend":
        op = np.array([lib.pg_op_code(b"LEAF")] * 2, np.uint8)
        a = np.zeros(2, np.uint32)
        for array in (op, a):
            array.setflags(write=False)
        new = m.tape.extend(op, a, a, values)
        assert [m.tape[i].value for i in new] == [0.25, 0.75]
    else:
        data = m.data.copy()
        data.setflags(write=False)
        assert np.array_equal(m.tape.eval_batch(m.y, [m.x], data, threads=2),
                              m.tape.eval_batch(m.y, [m.x], m.data, threads=2))
    m.x.set(0.5)
    m.w.set(-1.5)
    m.assert_as_before()


# ---- NaN and infinities: IEEE results, no exception and no warning -------------------------

def _numpy(f):
    def at(v):
        with np.errstate(all="ignore"):
            return float(f(np.float64(v)))
    return at


# (expression on the tape, the same in numpy, its derivative by the tape's rule in numpy)
IEEE_CASES = {
    "exp": (pg.exp, np.exp, np.exp),
    "log": (pg.log, np.log, lambda v: 1.0 / v),
    "sqrt": (pg.sqrt, np.sqrt, lambda v: 0.5 / np.sqrt(v)),
    "tanh": (pg.tanh, np.tanh, lambda v: 1.0 - np.tanh(v) ** 2),
    "sigmoid": (pg.sigmoid, lambda v: 1.0 / (1.0 + np.exp(-v)), None),
    "relu": (pg.relu, lambda v: np.maximum(v, 0.0), lambda v: np.float64(v > 0)),
    "x * 0": (lambda t: t * 0.0, lambda v: v * 0.0, lambda v: np.float64(0.0)),
    "1 / x": (lambda t: 1.0 / t, lambda v: 1.0 / v, lambda v: -(1.0 / v) * (1.0 / v)),
    "x - x": (lambda t: t - t, lambda v: v - v, lambda v: np.float64(0.0)),
    "x ** 2": (lambda t: t ** 2, lambda v: v ** 2, lambda v: 2.0 * v),
    "max(x, 1)": (lambda t: pg.maximum(t, 1.0), lambda v: np.maximum(v, 1.0),
                  lambda v: np.float64(1.0 if v > 1 else 0.5 if v == 1 else 0.0)),
    "user function": (lambda t: t.apply("cube", lambda v: v * v * v, lambda v: 3 * v * v),
                      lambda v: v * v * v, lambda v: 3 * v * v),
}
SPECIAL = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "-0": -0.0, "5e-324": 5e-324}


def _same(got, want):
    return got == want or (math.isnan(got) and math.isnan(want))


@pytest.mark.parametrize("special", sorted(SPECIAL))
@pytest.mark.parametrize("case", sorted(IEEE_CASES))
def test_nan_and_infinities_give_ieee_results(model, case, special):
    build, value, derivative = IEEE_CASES[case]
    v = SPECIAL[special]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = model.tape.term("special", 1.0)
        y = build(x)
        x.set(v)
        assert _same(y.value, _numpy(value)(v)), (y.value, _numpy(value)(v))
        if derivative is not None:
            want = _numpy(derivative)(v)
            assert _same(y.derive(x), want), (y.derive(x), want)
            y.backprop()
            assert _same(x.grad, want)
            assert _same(pg.grad(y, x).value, want)
        # batches agree with the scalar sweeps
        batch = model.tape.eval_batch(y, [x], np.array([[v], [1.0]]), threads=2)
        assert _same(batch[0], y.value)
        # values through set_values and extend are the same values
        model.tape.set_values([x], np.array([v]))
        assert _same(y.value, _numpy(value)(v))
        (leaf,) = model.tape.extend(["leaf"], value=[v])
        assert _same(model.tape[leaf].value, v)
    model.x.set(0.5)
    model.assert_as_before()
