"""numpy in and out: many values, many rows, one C call each.

The functions here back Tape.values, Tape.grads, Tape.set_values,
Tape.eval_batch and Tape.grad_batch.  Each checks its arguments completely
before calling C, so bad input raises and writes nothing.
"""
import os

import numpy as np

from ._binding import ffi, lib
from .errors import TapeMismatchError
from .tape import Term

# A thread must have at least this many node evaluations (rows x nodes) of
# work before threads=None starts it: below that, starting it costs more.
_WORK_PER_THREAD = 200_000


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def node_indices(tape, terms, what):
    """A C array of the node indices of `terms`, all of which must be on `tape`."""
    if type(terms) is Term:
        terms = (terms,)
    try:
        indices = [t.index for t in terms if type(t) is Term and t.tape is tape]
    except TypeError:
        raise TypeError(f"{what} must be a sequence of Terms, not {type(terms).__name__}") from None
    if len(indices) != len(terms):
        for t in terms:
            if type(t) is not Term:
                raise TypeError(f"{what} must hold Terms, not {type(t).__name__}")
        raise TapeMismatchError(f"{what} holds a Term of another tape")
    return ffi.new("uint32_t[]", indices), len(indices)


def as_array(data, shape, what, dtype=np.float64):
    """data as a C-contiguous array of `dtype` and `shape` (None: any length).

    A numpy array must already have that dtype and layout: a silent copy
    would hide a caller's mistake (a transposed view, float32 data), so it is
    refused with the reason.  Lists and tuples are converted.
    """
    dtype = np.dtype(dtype)
    if not isinstance(data, np.ndarray):
        if not isinstance(data, (list, tuple)):
            raise TypeError(f"{what} must be a numpy array, not {type(data).__name__}")
        data = np.array(data, dtype=dtype)
    if data.dtype != dtype:
        raise TypeError(f"{what} must have dtype {dtype}, not {data.dtype} (use .astype(np.{dtype}))")
    if data.ndim != len(shape) or any(want is not None and got != want for got, want in zip(data.shape, shape)):
        wanted = ", ".join("rows" if w is None else str(w) for w in shape)
        raise ValueError(f"{what} must have shape ({wanted}{',' if len(shape) == 1 else ''}), not {data.shape}")
    if not data.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (use np.ascontiguousarray)")
    return data


def resolve_threads(threads, rows, work_per_row):
    """The number of threads to run: threads=None means every core, as far as
    the work pays for them."""
    if threads is None:
        useful = rows * work_per_row // _WORK_PER_THREAD
        return 1 if useful <= 1 else min(cpu_count(), useful)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be None or a positive int, not {threads!r}")
    return min(threads, 2**31 - 1)  # C's int; the core uses at most one thread a row anyway


def values(tape, terms):
    idx, n = node_indices(tape, terms, "terms")
    out = np.empty(n)
    tape._check(lib.pg_values(tape._ptr, idx, n, ffi.from_buffer("double[]", out)))
    return out


def grads(tape, terms):
    idx, n = node_indices(tape, terms, "terms")
    out = np.empty(n)
    tape._check(lib.pg_grads(tape._ptr, idx, n, ffi.from_buffer("double[]", out)))
    return out


def set_values(tape, terms, array):
    idx, n = node_indices(tape, terms, "terms")
    array = as_array(array, (n,), "array")
    tape._check(lib.pg_set_values(tape._ptr, idx, n, ffi.from_buffer("double[]", array)))


def set_grads(tape, terms, array):
    idx, n = node_indices(tape, terms, "terms")
    array = as_array(array, (n,), "array")
    tape._check(lib.pg_set_grads(tape._ptr, idx, n, ffi.from_buffer("double[]", array)))


def eval_batch(tape, outputs, inputs, data, threads=None):
    single = not isinstance(outputs, (list, tuple))
    out_idx, n_out = node_indices(tape, outputs, "outputs")
    in_idx, n_in = node_indices(tape, inputs, "inputs")
    data = as_array(data, (None, n_in), "data")
    rows = data.shape[0]
    threads = resolve_threads(threads, rows, len(tape))
    result = np.empty((rows, n_out))
    tape._check(lib.pg_eval_batch(tape._ptr, out_idx, n_out, in_idx, n_in,
                                  ffi.from_buffer("double[]", data), rows, threads,
                                  ffi.from_buffer("double[]", result)))
    return result[:, 0] if single else result


def check_loss(tape, loss):
    if type(loss) is not Term:
        raise TypeError(f"loss must be a Term, not {type(loss).__name__}")
    if loss.tape is not tape:
        raise TapeMismatchError("loss is a Term of another tape")


def check_rows(data, mean):
    """The number of rows of data, which a mean needs at least one of."""
    if mean and data.shape[0] == 0:
        raise ValueError("reduction='mean' needs at least one row of data")
    return data.shape[0]


_REDUCTIONS = {"sum": 0, "mean": 1}


def reduction_flag(reduction):
    try:
        return _REDUCTIONS[reduction]
    except (KeyError, TypeError):
        raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}") from None


def penalty_index(tape, penalty):
    """The node of a penalty Term for C, or -1 for None."""
    if penalty is None:
        return -1
    if type(penalty) is not Term:
        raise TypeError(f"penalty must be a Term or None, not {type(penalty).__name__}")
    if penalty.tape is not tape:
        raise TapeMismatchError("penalty is a Term of another tape")
    return penalty.index


def grad_batch(tape, loss, inputs, data, wrt, reduction="sum", threads=None, penalty=None):
    check_loss(tape, loss)
    mean = reduction_flag(reduction)
    penalty = penalty_index(tape, penalty)
    in_idx, n_in = node_indices(tape, inputs, "inputs")
    wrt_idx, n_wrt = node_indices(tape, wrt, "wrt")
    data = as_array(data, (None, n_in), "data")
    rows = check_rows(data, mean)
    threads = resolve_threads(threads, rows, loss.index + 1)
    return run_grad_batch(tape, loss.index, penalty, in_idx, n_in, data, wrt_idx, n_wrt, mean, threads)


def run_grad_batch(tape, loss, penalty, in_idx, n_in, data, wrt_idx, n_wrt, mean, threads):
    """grad_batch with its arguments checked and converted (node indices, C
    arrays of them): the Trainer keeps them for every step."""
    total = ffi.new("double *")
    grads_out = np.empty(n_wrt)
    tape._check(lib.pg_grad_batch(tape._ptr, loss, penalty, in_idx, n_in,
                                  ffi.from_buffer("double[]", data), len(data), wrt_idx, n_wrt, mean,
                                  threads, total, ffi.from_buffer("double[]", grads_out)))
    return total[0], grads_out
