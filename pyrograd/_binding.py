"""The bridge to the C core: the cffi module, status codes and callbacks.

Everything that turns a C status into a Python exception, or a Python
callable into something the tape can call, lives here.
"""
import itertools
import numbers

from _pyrograd_core import ffi, lib

from .errors import DerivativeError, NotALeafError, PyrogradError, TapeBusyError

# Op codes by their stable names (the C op table is the only list of ops).
OPS = {ffi.string(lib.pg_op_name(op)).decode().lower(): op for op in range(lib.pg_op_count())}
OP_LABELS = [ffi.string(lib.pg_op_label(op)).decode() for op in range(lib.pg_op_count())]
OP_ARITY = [lib.pg_op_arity(op) for op in range(lib.pg_op_count())]

_ERRORS = {
    lib.PG_EINVAL: PyrogradError,
    lib.PG_ENOTLEAF: NotALeafError,
    lib.PG_EBUSY: TapeBusyError,
    lib.PG_ENODERIV: DerivativeError,
}


def raise_status(tape, code):
    """Raises the exception for status `code` (positive) of `tape`."""
    if code == lib.PG_ECALLBACK:
        error = tape._pending.take(lib.pg_callback_code(tape._ptr))
        if error is not None:
            raise error
    message = ffi.string(lib.pg_errmsg(tape._ptr)).decode("utf-8", "replace")
    if code == lib.PG_ENOMEM:
        raise MemoryError(message)
    raise _ERRORS.get(code, PyrogradError)(message)


class ParkedErrors:
    """Exceptions raised by a tape's Python functions during a sweep.

    The callback parks its exception under a fresh code and returns the code
    to C; the sweep reports the code of the failure that counts (the first
    thread's, in a batch), so the exception raised does not depend on timing.
    """

    def __init__(self):
        self._errors = {}
        self._codes = itertools.count(1)  # next() is atomic: callbacks may run on several threads

    def park(self, error):
        code = next(self._codes) % 0x3FFFFFFF + 1
        self._errors[code] = error
        return code

    def take(self, code):
        """The exception parked under code (or None); forgets all the others."""
        error = self._errors.get(code)
        self._errors.clear()
        return error


class PythonFunction:
    """A Python callable float -> float that the tape calls through cffi.

    The tape holds on to this object (and so to the handle the C side keeps)
    for as long as the tape lives.  An exception from the callable is parked
    in `pending`, the sweep stops, and raise_status raises it again.
    """

    __slots__ = ("func", "name", "pending", "handle")

    def __init__(self, func, name, pending):
        self.func = func
        self.name = name
        self.pending = pending
        self.handle = ffi.new_handle(self)


@ffi.def_extern()
def pg_py_callback(ud, x, out):
    fn = ffi.from_handle(ud)
    try:
        result = fn.func(x)
        if type(result) is not float:
            if isinstance(result, bool) or not isinstance(result, numbers.Real):
                raise TypeError(
                    f"function {fn.name!r} returned {type(result).__name__}, expected a float"
                )
            result = float(result)
        out[0] = result
        return 0
    except BaseException as error:  # KeyboardInterrupt too: the sweep stops either way
        return fn.pending.park(error)
