"""The bridge to the C core: the cffi module, status codes and callbacks.

Everything that turns a C status into a Python exception, or a Python
callable into something the tape can call, lives here.
"""
import itertools
import numbers
import threading

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
    interrupt = getattr(_interrupts, "error", None)
    if interrupt is not None:  # Ctrl-C stopped the call: that comes first
        _interrupts.error = None
        raise interrupt
    if code == lib.PG_EBUSY:
        # A busy call touched nothing, so the tape holds no message for it.
        raise TapeBusyError(ffi.string(lib.pg_errstr(code)).decode())
    if code == lib.PG_EINTERRUPT:  # pg_interrupt, from another thread
        raise KeyboardInterrupt("the call was interrupted")
    if code == lib.PG_ECALLBACK:
        error = tape._pending.take(lib.pg_callback_code(tape._ptr))
        if error is not None:
            raise error
    message = ffi.string(lib.pg_errmsg(tape._ptr)).decode("utf-8", "replace")
    if code == lib.PG_ENOMEM:
        raise MemoryError(message)
    raise _ERRORS.get(code, PyrogradError)(message)


class ParkedErrors(dict):
    """Exceptions raised by a tape's Python functions during a call, by code.

    The callback parks its exception under a fresh code and returns the code
    to C; the call reports the code of the failure that counts (the lowest
    failed node the value read depends on; in a batch, the first thread's),
    so the exception raised does not depend on timing.  A call may park
    exceptions it does not report (a function that failed in a node the
    value read does not depend on): the tape forgets them when the call ends
    (Tape._check), so that no traceback outlives its call.
    """

    def __init__(self):
        super().__init__()
        self._codes = itertools.count(1)  # next() is atomic: callbacks may run on several threads

    def park(self, error):
        code = next(self._codes) % 0x3FFFFFFF + 1
        self[code] = error
        return code

    def take(self, code):
        """The exception parked under code (or None); forgets all the others."""
        error = self.get(code)
        self.clear()
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


# ---- Ctrl-C in long calls -------------------------------------------------------
#
# Python runs a signal handler (KeyboardInterrupt for Ctrl-C) only on the main
# thread and only between bytecodes, so a C call that runs for seconds would
# hold Ctrl-C back until it returns.  Every tape therefore has pg_py_progress
# as its progress handler: the C core calls it about every PROGRESS_MS of a
# long call, on the thread that made the call.  Entering it runs any pending
# signal handler; an exception from one stops the call (PG_EINTERRUPT), and
# raise_status raises it on the same thread once the call has returned.
#
# This costs short calls nothing: the core reads the clock only after some
# 65 000 node evaluations, and calls the handler only once a call has run
# for PROGRESS_MS.  A watcher thread that calls pg_interrupt on Ctrl-C would
# have to start for every call that might be long.

PROGRESS_MS = 25

_interrupts = threading.local()  # .error: what stopped this thread's last call


def _stop_on_error(exc_type, error, traceback):
    _interrupts.error = error  # then the callback returns 1: stop


@ffi.def_extern(error=1, onerror=_stop_on_error)
def pg_py_progress(ud):
    return 0
