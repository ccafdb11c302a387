"""The bridge to the C core: the cffi module, status codes and callbacks.

Everything that turns a C status into a Python exception, or a Python
callable into something the tape can call, lives here.
"""
import functools
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

# What a callback returns to C when an exception escaped it (see below);
# ParkedErrors never gives it.
ESCAPED = -1


def raise_status(tape, code):
    """Raises the exception for status `code` (positive) of `tape`."""
    escaped = _take_escaped(tape, code)
    if escaped is not None:  # a signal handler's (Ctrl-C's), which escaped a callback
        tape._pending.take(0)
        raise escaped
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
    """Exceptions raised by a tape's Python functions during a call.

    The callback parks its exception under a fresh code and returns the code
    to C; the call reports the code of the failure that counts (the lowest
    failed node the value read depends on; in a batch, the first thread's),
    so the exception raised does not depend on timing.  A KeyboardInterrupt
    or SystemExit (a BaseException that is no Exception) gets a negative
    code: it stops the whole call, which neither retries the function nor
    goes on to other nodes (see pg_callback_fn).

    A call may also park exceptions it does not report: a function that
    failed in a node the value read does not depend on (on the calling
    thread), or in another thread of a batch (one of the core's, which Python
    did not start).  When a call ends, the tape forgets what the calling
    thread and the core's threads parked, so no traceback outlives its call.
    What another Python thread parked stays: its own call on the same tape
    may have failed just before and not raised yet.  Each entry is
    code -> (thread, exception).
    """

    def __init__(self):
        super().__init__()
        self._codes = itertools.count(1)  # next() is atomic: callbacks may run on several threads

    def park(self, error):
        code = next(self._codes) % 0x3FFFFFFF + 1
        if not isinstance(error, Exception):
            code = ESCAPED - code  # below ESCAPED: never it
        self[code] = (threading.get_ident(), error)
        return code

    def take(self, code):
        """The exception parked under code (or None); forgets it and what
        the call left (see above)."""
        entry = self.pop(code, None)
        self.forget_this_calls()
        return entry[1] if entry is not None else None

    def forget_this_calls(self):
        """Forgets what this thread and the core's threads parked."""
        me = threading.get_ident()
        python_threads = {thread.ident for thread in threading.enumerate()}
        for code, (thread, _error) in list(self.items()):
            if thread == me or thread not in python_threads:
                self.pop(code, None)


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


# ---- exceptions that escape a callback -------------------------------------------
#
# A signal handler (KeyboardInterrupt for Ctrl-C, or any handler that raises)
# runs between bytecodes: also as a callback starts, before its `try`, or in
# its `except` while it parks an exception.  Such an exception escapes the
# callback.  cffi then returns ESCAPED to C (`error=`), which the C core takes
# as a failure (a callback's output is read only after it returns 0), and
# hands the exception to `onerror`.  That must not run Python code: a second
# signal arriving as it starts would make cffi print both exceptions and keep
# neither.  So onerror is BaseException.__init__ of a holder, bound by
# functools.partial, all C: it stores (type, exception, traceback) as the
# holder's args, and raise_status raises the exception after the call.
#
# A call whose callback an exception escaped fails with that callback code,
# ESCAPED, so raise_status takes the holder's exception only then: an
# exception left behind (a second signal hit raise_status first) is never
# raised by a later call.  Signal handlers run on the main thread only, so
# escapes on two threads at once (an exception of the callback's own, such
# as a MemoryError while parking, on another) are not a concern.

_escaped = BaseException()  # its args: (type, exception, traceback) of the last escape
_keep_escaped = functools.partial(BaseException.__init__, _escaped)


def _take_escaped(tape, code):
    """The exception that escaped a callback of the call that failed with
    `code`, or None."""
    if code not in (lib.PG_ECALLBACK, lib.PG_EINTERRUPT) or lib.pg_callback_code(tape._ptr) != ESCAPED:
        return None
    kept = _escaped.args
    _escaped.args = ()
    return kept[1].with_traceback(kept[2]) if kept else None


@ffi.def_extern(error=ESCAPED, onerror=_keep_escaped)
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
# long call, on the thread that made the call (a batch's calling thread also
# while it waits for the others).  Entering it runs any pending signal
# handler; an exception from one escapes it, as above: the call stops
# (PG_EINTERRUPT) and raise_status raises the exception on the same thread.
#
# This costs short calls nothing: the core reads the clock only after some
# 65 000 node evaluations, and calls the handler only once a call has run
# for PROGRESS_MS.  A watcher thread that calls pg_interrupt on Ctrl-C would
# have to start for every call that might be long.

PROGRESS_MS = 25


@ffi.def_extern(error=ESCAPED, onerror=_keep_escaped)
def pg_py_progress(ud):
    return 0
