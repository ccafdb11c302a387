"""Math on terms: the built-in functions and `apply` for your own.

Each function takes a Term (and appends one node to its tape) or a plain
number (and returns a float with the same IEEE rules as the tape: log(0) is
-inf, not an exception).
"""
import ctypes
import math

import numpy as np

from ._binding import PythonFunction, ffi, lib, raise_status
from .tape import Term, _binary, _is_number, _MAX, _MIN, encoded_name

__all__ = [
    "exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sigmoid", "relu",
    "softplus", "abs", "maximum", "minimum", "apply", "unary",
]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _unary(method, on_numbers):
    """A function that calls Term.method on terms and on_numbers on numbers."""

    def function(x):
        if type(x) is Term:
            return method(x)
        if _is_number(x):
            with np.errstate(all="ignore"):
                return float(on_numbers(float(x)))
        raise TypeError(f"{method.__name__}() takes a Term or a real number, not {type(x).__name__}")

    function.__name__ = method.__name__
    function.__doc__ = f"{method.__name__}(x) for a Term (a new node) or a number (a float)."
    return function


exp = _unary(Term.exp, np.exp)
log = _unary(Term.log, np.log)
sqrt = _unary(Term.sqrt, np.sqrt)
sin = _unary(Term.sin, np.sin)
cos = _unary(Term.cos, np.cos)
tan = _unary(Term.tan, np.tan)
tanh = _unary(Term.tanh, np.tanh)
sigmoid = _unary(Term.sigmoid, _sigmoid)
relu = _unary(Term.relu, lambda x: x if x > 0 or x != x else 0.0)  # NaN stays NaN, as on the tape
softplus = _unary(Term.softplus, lambda x: np.logaddexp(0.0, x))
abs = _unary(Term.abs, math.fabs)


def _binary_function(op, on_numbers, name):
    def function(a, b):
        if type(a) is Term or type(b) is Term:
            result = _binary(a, b, op)
            if result is NotImplemented:
                raise TypeError(f"{name}() takes Terms or real numbers")
            return result
        if _is_number(a) and _is_number(b):
            return float(on_numbers(float(a), float(b)))
        raise TypeError(f"{name}() takes Terms or real numbers")

    function.__name__ = name
    return function


maximum = _binary_function(_MAX, np.maximum, "maximum")
maximum.__doc__ = "The larger of a and b; at a tie the gradient is split evenly (as PyTorch does)."
minimum = _binary_function(_MIN, np.minimum, "minimum")
minimum.__doc__ = "The smaller of a and b; at a tie the gradient is split evenly (as PyTorch does)."


# ---- user functions ------------------------------------------------------------

_NATIVE_TYPE = "double(*)(double)"


def apply(x, name, f, df, d2f=None):
    """A custom unary op with value f(x) and derivative df(x).

    f, df and d2f are each either a Python callable float -> float, called by
    the tape through a cffi callback, or a native `double (*)(double)`
    function pointer (a cffi pointer, or a ctypes function with restype and
    argtypes c_double), which the tape calls without entering Python.

    With d2f, pyrograd.grad can differentiate the op twice.  df (or d2f) may
    also be an op made by pyrograd.unary, which knows its own derivatives, so
    the op can be differentiated to any order.  Where no derivative of the
    order needed is known, pyrograd.grad raises DerivativeError.

    An exception raised by f or df stops the sweep and reaches the caller of
    `.value`, `derive` or `backprop` unchanged; the tape stays usable.
    """
    if type(x) is not Term:
        raise TypeError(f"apply takes a Term, not {type(x).__name__}")
    encoded_name(name, "apply: the name")
    tape = x.tape
    fn = _register(tape, name, f, df, d2f)
    return tape._term(lib.pg_call(tape._ptr, fn, x.index))


class Unary:
    """A custom unary op that works on any tape, made by pyrograd.unary."""

    def __init__(self, name, f, df, d2f=None):
        encoded_name(name, "an op's name")
        if isinstance(f, Unary):
            raise TypeError(f"{name}: f must be a function, not an op")
        self.name, self.f, self.df, self.d2f = name, f, df, d2f

    def __call__(self, x):
        """A new node on x's tape, or, for a number, f(x) as a float."""
        if type(x) is Term:
            return apply(x, self.name, self.f, self.df, self.d2f)
        if _is_number(x) and callable(self.f) and not isinstance(self.f, ffi.CData):
            return float(self.f(float(x)))
        raise TypeError(f"{self.name}() takes a Term or a real number")

    def __repr__(self):
        return f"<pyrograd.unary {self.name!r}>"


def unary(name, f, df, d2f=None):
    """A custom unary op to use like pyrograd.exp: `op = unary("sq", f, df)`,
    then `op(x)`.  When df is itself such an op, the derivatives chain to any
    order (`grad` of `op(x)` is `df(x) * dx`, and so on)."""
    return Unary(name, f, df, d2f)


def _register(tape, name, f, df, d2f=None):
    """Adds (name, f, df, d2f) to the tape's function table once; returns its id."""
    if not isinstance(name, str):
        raise TypeError(f"apply: the name must be a str, not {type(name).__name__}")
    if isinstance(d2f, Unary) and not isinstance(df, Unary):
        df, d2f = Unary(f"{name}'", df, d2f), None  # the chain starts one order up
    # By identity: callables need not be hashable, and the tape keeps f, df
    # and d2f alive, so their ids stay theirs.
    key = (name, id(f), id(df), id(d2f))
    known = tape._functions.get(key)
    if known is not None:
        return known[0]
    linked = _register(tape, df.name, df.f, df.df, df.d2f) if isinstance(df, Unary) else None
    orders = [(f, name), (df.f if linked is not None else df, f"{name}'")]
    if d2f is not None:
        orders.append((d2f, f"{name}''"))
    slots = [_function_slot(func, role, tape) for func, role in orders]
    fn = lib.pg_fn_new(tape._ptr, name.encode())
    if fn < 0:
        raise_status(tape, -fn)
    for order, (native, callback, ud, _) in enumerate(slots):
        tape._check(lib.pg_fn_set(tape._ptr, fn, order, native, callback, ud))
    if linked is not None:
        tape._check(lib.pg_fn_link(tape._ptr, fn, linked))
    # The tape keeps alive everything C now points into (and f, df and d2f,
    # so their ids stay theirs and a copy of the tape can register them again).
    tape._functions[key] = (fn, (f, df, d2f), [slot[3] for slot in slots])
    return fn


def _function_slot(func, role, tape):
    """(native pointer, callback, userdata, object to keep alive) for func."""
    if func is None:  # no such derivative: sweeps and grad that need it say so
        return ffi.NULL, ffi.NULL, ffi.NULL, None
    if isinstance(func, ffi.CData):
        ctype = ffi.getctype(ffi.typeof(func))
        if ctype != _NATIVE_TYPE:
            raise TypeError(f"{role}: a native function must be {_NATIVE_TYPE}, not {ctype}")
        return ffi.cast("pg_native_fn", func), ffi.NULL, ffi.NULL, func
    if isinstance(func, ctypes._CFuncPtr):
        if func.restype is not ctypes.c_double or tuple(func.argtypes or ()) != (ctypes.c_double,):
            raise TypeError(
                f"{role}: a ctypes function must take and return c_double "
                "(set restype = ctypes.c_double and argtypes = [ctypes.c_double])"
            )
        address = ctypes.cast(func, ctypes.c_void_p).value
        return ffi.cast("pg_native_fn", address), ffi.NULL, ffi.NULL, func
    if callable(func):
        wrapper = PythonFunction(func, role, tape._pending)
        return ffi.NULL, lib.pg_py_callback, wrapper.handle, wrapper
    raise TypeError(f"{role} must be a callable or a native function pointer, not {type(func).__name__}")
