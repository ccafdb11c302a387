"""Math on terms: the built-in functions and `apply` for your own.

Each function takes a Term (and appends one node to its tape) or a plain
number (and returns a float with the same IEEE rules as the tape: log(0) is
-inf, not an exception).
"""
import ctypes
import math

import numpy as np

from ._binding import PythonFunction, ffi, lib
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


def _key(name, f, df, d2f):
    # By identity: callables need not be hashable, and the tape keeps f, df
    # and d2f alive, so their ids stay theirs.
    return (name, id(f), id(df), id(d2f))


def _register(tape, name, f, df, d2f=None):
    """The id of the tape's function (name, f, df, d2f), defined on first use.

    A pyrograd.unary df brings its own derivative, and so on: the chain is
    followed by identity until it ends, reaches a function the tape has, or
    comes back to one of its own (exp is its own derivative, sin's fourth
    derivative is sin), and the functions it lacks are defined by one C call,
    which defines all of them or none.
    """
    known = tape._functions.get(_key(name, f, df, d2f))
    if known is not None:
        return known[0]
    # Each new function: its key, (name, f, df, d2f) as given, and its slots;
    # an int instead stands for a function the tape has.
    functions, at = [], {}
    spec, link = (name, f, df, d2f), -1
    while True:
        key = _key(*spec)
        if key in at:  # a cycle
            link = at[key]
            break
        known = tape._functions.get(key)
        if known is not None:
            link = len(functions)
            functions.append(known[0])
            break
        at[key] = len(functions)
        name, f, df, d2f = spec
        if not isinstance(name, str):
            raise TypeError(f"apply: the name must be a str, not {type(name).__name__}")
        if isinstance(d2f, Unary) and not isinstance(df, Unary):
            df, d2f = Unary(f"{name}'", df, d2f), None  # the chain goes on one order up
        orders = (f, df.f if isinstance(df, Unary) else df, d2f)
        slots = [_function_slot(func, role, tape) for func, role in zip(orders, (name, f"{name}'", f"{name}''"))]
        functions.append((key, spec, slots))
        if not isinstance(df, Unary):
            break
        spec = (df.name, df.f, df.df, df.d2f)

    # Each new function's derivative is the next one; the last one's is link.
    fresh = len(functions) - isinstance(functions[-1], int)
    defs = ffi.new("pg_fndef[]", len(functions))
    names = []  # alive until C has copied them
    for k, function in enumerate(functions):
        entry = defs[k]
        if isinstance(function, int):
            entry.fn = function
            continue
        _, (name, _, _, _), slots = function
        names.append(ffi.new("char[]", name.encode()))
        entry.fn, entry.name, entry.base, entry.level = -1, names[-1], -1, 0
        entry.deriv = k + 1 if k + 1 < fresh else link
        for order, (native, callback, ud, _) in enumerate(slots):
            entry.order[order].native = native
            entry.order[order].callback = callback
            entry.order[order].ud = ud
    # What C will point into is kept before the call, so nothing can come
    # between C keeping a pointer and Python keeping its object.
    keep = [slot[3] for function in functions if not isinstance(function, int)
            for slot in function[2] if slot[3] is not None]
    tape._alive[id(keep)] = keep
    ids = ffi.new("int[]", len(functions))
    try:
        tape._check(lib.pg_fn_define(tape._ptr, defs, len(functions), ids))
    except BaseException:
        del tape._alive[id(keep)]
        raise
    for k, function in enumerate(functions):
        if not isinstance(function, int):
            tape._functions[function[0]] = (ids[k], function[1])
    return ids[0]


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
