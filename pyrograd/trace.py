"""Traced functions, the Python form of rustograd's `rustograd!` macro.

    @pg.function
    def f(x, y):
        return pg.sin(x) * y + x ** 2

    f(1.0, 2.0)                        # a float
    f(np.linspace(0, 1, 5), 2.0)       # an array: arguments broadcast like numpy
    f.grad(1.0, 2.0)                   # (df/dx, df/dy)
    f.value_and_grad(1.0, 2.0, argnums=0)
"""
import functools
import inspect
import os
import threading
import weakref

import numpy as np

from ._binding import ffi, lib
from .derivatives import grad as graph_grad
from .errors import PyrogradError
from .tape import Tape, Term, _is_number, _tracing

# The paths through one function's Python control flow that it keeps traced;
# a call that needs one more is an error (see function's docstring).
MAX_PATHS = 32

_PARAMETER_KINDS = {
    inspect.Parameter.VAR_POSITIONAL: "*{}",
    inspect.Parameter.KEYWORD_ONLY: "keyword-only {}",
    inspect.Parameter.VAR_KEYWORD: "**{}",
}
# Array dtypes that hold real numbers: bool, signed and unsigned ints, floats.
_REAL_KINDS = "biuf"


def function(fn):
    """Traces fn, a function of scalar arguments, into a tape on its first
    call and returns a callable that evaluates the tape instead.

    fn takes positional parameters only (not *args, keyword-only parameters
    or **kwargs), and every call passes all of them: real numbers (Python or
    numpy) or arrays of them.  Arrays broadcast against each other like
    numpy and are evaluated in one C call (Tape.eval_batch).  None, strings,
    dates, complex numbers and Terms are refused with TypeError.

    Tracing runs fn with Terms for its arguments, holding the call's values.
    Inside it a Term is not a number: float(x), and so math.sin(x) or
    math.exp(x), is a TypeError (use pg.sin, pg.exp ..., which build nodes),
    and so is x == 2.0 (== on Terms compares nodes).  x.value still reads
    the tracing call's value, as a constant that later calls do not change:
    keep it for printing.

    Python control flow on values is allowed: a comparison of Terms (x < y,
    x > 0, ...) or a truth test (`if x:`, true when x is not zero) gives a
    bool from the current values, and the trace keeps it as a guard.  Each
    later call checks the guards against its own values; when one comes out
    differently, fn is traced again for that path.  So every call follows
    the branches its own values choose, at the cost of one trace per path
    taken; an array call splits its rows among the paths.  Past MAX_PATHS
    (32) paths a call raises PyrogradError: keep such choices in the graph
    with pg.maximum, pg.minimum, pg.relu, pg.abs.  fn must be deterministic
    (the same values, the same path).  A user function (`apply`) that fails
    on values its branch excludes (math.log under `if x > 0`) is fine: a
    call reports such an error only when its own path fails.

    Calls from many threads are safe: a Function takes a lock around each
    call, so each gets its own result (they run one at a time).
    """
    return Function(fn)


class _Path:
    """One trace of fn: its tape, input leaves and output, and the guards
    that chose its path through fn's control flow."""

    __slots__ = ("tape", "inputs", "output", "probe", "guards", "outcomes", "gradients",
                 "_in_idx", "_probe_idx", "_in_buf", "_probe_buf")

    def __init__(self, fn, names, values):
        tape = Tape()
        inputs = [tape.term(name, v) for name, v in zip(names, values)]
        recorded = _tracing[tape] = []
        try:
            output = fn(*inputs)
        finally:
            del _tracing[tape]
        if _is_number(output):
            output = tape.const(output)
        if type(output) is not Term or output.tape is not tape:
            raise TypeError(f"{fn.__name__} must return a Term or a number built from its "
                            f"arguments, not {type(output).__name__}")
        # probe: the output and the Terms the guards compare, evaluated together.
        probe, slot = [output], {}

        def operand(x):
            if type(x) is not Term:
                return "number", x
            if x.tape is not tape:
                return "other tape", x  # read when checked: its tape may have changed
            if x.index not in slot:
                slot[x.index] = len(probe)
                probe.append(x)
            return "probe", slot[x.index]

        self.guards = [(comparison, operand(a), operand(b), outcome)
                       for comparison, a, b, outcome in recorded]
        self.outcomes = tuple(bool(outcome) for *_, outcome in recorded)  # which path this is
        self.tape, self.inputs, self.output, self.probe = tape, inputs, output, probe
        self.gradients = None  # the gradient graph, built for the first array gradient
        self._in_idx = ffi.new("uint32_t[]", [t.index for t in inputs])
        self._probe_idx = ffi.new("uint32_t[]", [t.index for t in probe])
        self._in_buf = ffi.new("double[]", max(len(inputs), 1))
        self._probe_buf = ffi.new("double[]", len(probe))

    def scalar(self, values):
        """Sets the inputs to values (floats) and returns the probe's values,
        or None when a guard says the values take another path."""
        tape = self.tape
        self._in_buf[0:len(values)] = values
        tape._check(lib.pg_set_values(tape._ptr, self._in_idx, len(values), self._in_buf))
        tape._check(lib.pg_values(tape._ptr, self._probe_idx, len(self.probe), self._probe_buf))
        got = self._probe_buf
        for comparison, (kind_a, a), (kind_b, b), outcome in self.guards:
            a = got[a] if kind_a == "probe" else a.value if kind_a == "other tape" else a
            b = got[b] if kind_b == "probe" else b.value if kind_b == "other tape" else b
            if comparison(a, b) != outcome:
                return None
        return got

    def gradient(self):
        """The output's gradient (a list over the inputs) at the values the
        last `scalar` set."""
        tape, n = self.tape, len(self.inputs)
        tape._check(lib.pg_backprop(tape._ptr, self.output.index))
        tape._check(lib.pg_grads(tape._ptr, self._in_idx, n, self._in_buf))
        return ffi.unpack(self._in_buf, n)

    def rows(self, data, with_gradients):
        """(taken, columns) for rows of data: a mask of the rows this path
        takes (None: all of them), and for each row the output (and its
        gradients) in columns."""
        outputs = list(self.probe)
        if with_gradients:
            if self.gradients is None:  # built once, as a graph, then batched
                self.gradients = graph_grad(self.output, self.inputs)
            outputs += self.gradients
        columns = self.tape.eval_batch(outputs, self.inputs, data)
        if not self.guards:
            return None, columns
        taken = np.ones(len(data), dtype=bool)
        for comparison, (kind_a, a), (kind_b, b), outcome in self.guards:
            a = columns[:, a] if kind_a == "probe" else a.value if kind_a == "other tape" else a
            b = columns[:, b] if kind_b == "probe" else b.value if kind_b == "other tape" else b
            taken &= comparison(a, b) == outcome
        return taken, columns[:, [0] + list(range(len(self.probe), len(outputs)))]


# Every traced function, for the child of a fork: a lock another thread held
# when the process forked would be held for ever in the child.
_functions = weakref.WeakSet()


def _new_locks_in_child():
    for function in list(_functions):
        function._lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_new_locks_in_child)


class Function:
    """A traced function; see pyrograd.function."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self._fn = fn
        parameters = inspect.signature(fn).parameters.values()
        for p in parameters:
            if p.kind in _PARAMETER_KINDS:
                raise TypeError(
                    f"pg.function supports functions of positional parameters only, "
                    f"def f(x, y): {fn.__name__} has {_PARAMETER_KINDS[p.kind].format(p.name)}")
        self._names = [p.name for p in parameters]
        self._paths = []  # in the order they were traced; the first is `tape`'s
        self._last = 0  # the path of the last scalar call, tried first
        self._lock = threading.RLock()  # reentrant: a callback's call gets TapeBusyError, not a deadlock
        _functions.add(self)

    # ---- tracing
    @property
    def tape(self):
        """The tape fn was first traced into (after the first call).  Each
        other path through fn's control flow has a tape of its own."""
        if not self._paths:
            raise PyrogradError(f"{self.__name__} has not been traced yet: call it once first")
        return self._paths[0].tape

    def _trace(self, values):
        """Traces the path values take; returns its index among the paths (a
        known one when tracing gives the guards' outcomes of one)."""
        path = _Path(self._fn, self._names, values)
        for k, known in enumerate(self._paths):
            if known.outcomes == path.outcomes:
                return k
        if len(self._paths) >= MAX_PATHS:
            raise PyrogradError(
                f"{self.__name__} has taken more than {MAX_PATHS} paths through its Python "
                f"control flow (an if or a loop on the values of Terms), each a trace of its own: "
                f"keep such choices in the graph with pg.maximum, pg.minimum, pg.relu, pg.abs")
        self._paths.append(path)
        return len(self._paths) - 1

    def _arguments(self, args):
        """(floats, None) for a scalar call, or (data rows, broadcast shape)."""
        if len(args) != len(self._names):
            raise TypeError(f"{self.__name__} takes {len(self._names)} arguments, not {len(args)}")
        if all(_is_number(a) for a in args):
            return [float(a) for a in args], None
        arrays = []
        for name, a in zip(self._names, args):
            array = np.asarray(a)
            if array.dtype.kind not in _REAL_KINDS and not (  # object arrays of Fractions pass
                    array.dtype == object and all(_is_number(v) for v in array.flat)):
                raise TypeError(self._refusal(name, a, array))
            arrays.append(array.astype(np.float64, copy=False))
        arrays = np.broadcast_arrays(*arrays)
        shape = arrays[0].shape if arrays else ()
        data = np.ascontiguousarray(np.stack([a.ravel() for a in arrays], axis=1)) if arrays else np.empty((1, 0))
        return data, shape

    def _refusal(self, name, a, array):
        if type(a) is Term or (array.dtype == object and any(type(v) is Term for v in array.flat)):
            return (f"{self.__name__}: argument {name} is a Term; a traced function takes real numbers "
                    f"or arrays of them and evaluates its own tape.  To build nodes on a tape of yours, "
                    f"call the undecorated function, {self.__name__}.__wrapped__")
        what = type(a).__name__ if not isinstance(a, (np.ndarray, list, tuple)) else f"an array of {array.dtype}"
        return f"{self.__name__}: argument {name} must be real numbers or an array of them, not {what}"

    # ---- evaluation
    def _scalar(self, values):
        """The path values take and its probe's values (the output first)."""
        paths = self._paths
        if paths:
            got = self._try(self._last, values)
            if got is not None:
                return paths[self._last], got
            for k in range(len(paths)):
                if k != self._last:
                    got = self._try(k, values)
                    if got is not None:
                        self._last = k
                        return paths[k], got
        self._last = k = self._trace(values)
        got = paths[k].scalar(values)  # a user function's error is raised here, on its own path
        if got is None:
            raise self._nondeterministic()
        return paths[k], got

    def _try(self, k, values):
        """Path k's probe values, or None when values take another path or
        fail on this one (a user function given a value its branch excludes)."""
        try:
            return self._paths[k].scalar(values)
        except PyrogradError:
            raise
        except Exception:  # noqa: BLE001 - raised again if these values do take path k
            return None

    def _rows(self, data, with_gradients):
        """Each row's output (and gradients), from the path it takes."""
        if not self._paths:
            self._trace(data[0].tolist() if len(data) else [0.0] * len(self._names))
        result = np.empty((len(data), 1 + with_gradients * len(self._names)))
        pending = np.arange(len(data)) if len(self._paths) > 1 or self._paths[0].guards else None
        k = 0
        while pending is None or len(pending):
            rows = data if pending is None else data[pending]
            fresh = k == len(self._paths)
            if fresh and self._trace(rows[0].tolist()) != k:
                raise self._nondeterministic()  # a known path refused the row
            try:
                taken, columns = self._paths[k].rows(rows, with_gradients)
            except PyrogradError:
                raise
            except Exception:  # noqa: BLE001 - a user function failed on some row: find each row's path
                return self._row_by_row(data, with_gradients)
            if pending is None:  # one path, no guards: every row is its
                return columns
            if taken is None:
                result[pending] = columns
                break
            if fresh and not taken[0]:
                raise self._nondeterministic()  # the path just traced refuses its own row
            result[pending[taken]] = columns[taken]
            pending = pending[~taken]
            k += 1
        return result

    def _row_by_row(self, data, with_gradients):
        """_rows one row at a time, each by a scalar call."""
        result = np.empty((len(data), 1 + with_gradients * len(self._names)))
        for row, values in enumerate(data.tolist()):
            path, got = self._scalar(values)
            result[row, 0] = got[0]
            if with_gradients:
                result[row, 1:] = path.gradient()
        return result

    def _nondeterministic(self):
        return PyrogradError(f"{self.__name__} took another path through its control flow for the "
                             f"same values: a traced function must be deterministic")

    def __call__(self, *args):
        data, shape = self._arguments(args)
        with self._lock:
            if shape is None:
                return self._scalar(data)[1][0]
            return self._rows(data, False)[:, 0].reshape(shape)

    def value_and_grad(self, *args, argnums=None):
        """(value, gradient): the gradient is a tuple over the arguments in
        argnums (all of them when None), or one entry for an int argnums;
        arrays when the arguments are arrays."""
        picked = self._argnums(argnums)
        data, shape = self._arguments(args)
        with self._lock:
            if shape is None:
                path, got = self._scalar(data)
                value = got[0]
                grads = path.gradient()
            else:
                columns = self._rows(data, True)
                value = columns[:, 0].reshape(shape)
                grads = [columns[:, 1 + k].reshape(shape) for k in range(len(self._names))]
        chosen = tuple(grads[k] for k in picked)
        return value, chosen[0] if isinstance(argnums, int) else chosen

    def grad(self, *args, argnums=None):
        """The gradient alone; see value_and_grad."""
        return self.value_and_grad(*args, argnums=argnums)[1]

    def _argnums(self, argnums):
        n = len(self._names)
        if argnums is None:
            return tuple(range(n))
        picked = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        for k in picked:
            if not isinstance(k, int) or not -n <= k < n:
                raise ValueError(f"argnums must hold argument positions below {n}, not {argnums!r}")
        return tuple(k % n for k in picked)

    def dot(self, **options):
        """Graphviz DOT text of the first traced graph; see Term.dot."""
        self.tape  # raises if not traced yet
        return self._paths[0].output.dot(**options)

    def __repr__(self):
        if not self._paths:
            return f"<pyrograd.function {self.__name__} (not traced yet)>"
        paths = f", {len(self._paths)} paths" if len(self._paths) > 1 else ""
        return f"<pyrograd.function {self.__name__} (traced, {len(self._paths[0].tape)} nodes{paths})>"
