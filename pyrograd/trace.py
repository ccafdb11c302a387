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

import numpy as np

from .derivatives import grad as graph_grad
from .errors import PyrogradError
from .tape import Tape, Term, _is_number


def function(fn):
    """Traces fn, a function of scalar arguments, into a tape on its first
    call and returns a callable that evaluates the tape instead.

    Tracing runs fn once with Terms for its arguments, holding the values
    of the first call.  Python control flow that depends on values (an `if`
    on a comparison of Terms, a loop bound computed from one) is traced with
    those first values and not re-run: later calls follow the same branch.
    Write such choices with pg.maximum, pg.relu and the like to keep them in
    the graph.

    Array arguments broadcast against each other like numpy and are
    evaluated in one C call (Tape.eval_batch).
    """
    return Function(fn)


class Function:
    """A traced function; see pyrograd.function."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._names = [p.name for p in inspect.signature(fn).parameters.values()
                       if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self._tape = None
        self._inputs = self._output = self._grads = None

    # ---- tracing
    @property
    def tape(self):
        """The tape fn was traced into (after the first call)."""
        if self._tape is None:
            raise PyrogradError(f"{self.__name__} has not been traced yet: call it once first")
        return self._tape

    def _trace(self, first_values):
        tape = Tape()
        inputs = [tape.term(name, v) for name, v in zip(self._names, first_values)]
        output = self._fn(*inputs)
        if _is_number(output):
            output = tape.const(output)
        if type(output) is not Term or output.tape is not tape:
            raise TypeError(f"{self.__name__} must return a Term or a number built from its "
                            f"arguments, not {type(output).__name__}")
        self._tape, self._inputs, self._output = tape, inputs, output

    def _arguments(self, args):
        """(scalars or None, data rows, broadcast shape) for a call."""
        if len(args) != len(self._names):
            raise TypeError(f"{self.__name__} takes {len(self._names)} arguments, not {len(args)}")
        if all(_is_number(a) for a in args):
            values = [float(a) for a in args]
            if self._tape is None:
                self._trace(values)
            return np.array(values), None
        arrays = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in args])
        shape = arrays[0].shape if arrays else ()
        data = np.ascontiguousarray(np.stack([a.ravel() for a in arrays], axis=1)) if arrays else np.empty((1, 0))
        if self._tape is None:
            self._trace(data[0].tolist() if len(data) else [0.0] * len(args))
        return data, shape

    # ---- evaluation
    def __call__(self, *args):
        data, shape = self._arguments(args)
        if shape is None:
            self._tape.set_values(self._inputs, data)
            return self._output.value
        return self._tape.eval_batch(self._output, self._inputs, data).reshape(shape)

    def value_and_grad(self, *args, argnums=None):
        """(value, gradient): the gradient is a tuple over the arguments in
        argnums (all of them when None), or one entry for an int argnums;
        arrays when the arguments are arrays."""
        picked = self._argnums(argnums)
        data, shape = self._arguments(args)
        if shape is None:
            self._tape.set_values(self._inputs, data)
            self._output.backprop()
            grads = self._tape.grads(self._inputs).tolist()
            value = self._output.value
        else:
            if self._grads is None:  # built once, as a graph, then batched
                self._grads = graph_grad(self._output, self._inputs)
            columns = self._tape.eval_batch([self._output] + self._grads, self._inputs, data)
            value = columns[:, 0].reshape(shape)
            grads = [columns[:, 1 + k].reshape(shape) for k in range(len(self._inputs))]
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
        """Graphviz DOT text of the traced graph; see Term.dot."""
        self.tape  # raises if not traced yet
        return self._output.dot(**options)

    def __repr__(self):
        traced = f"traced, {len(self._tape)} nodes" if self._tape is not None else "not traced yet"
        return f"<pyrograd.function {self.__name__} ({traced})>"
