"""Derivatives of any order: gradients as graphs, Jacobians and Hessians.

`grad(y, x)` appends to the tape the nodes that compute dy/dx (the C core
builds them with constant folding and sharing of identical nodes), so the
result is an ordinary Term: it follows `set`, and `grad` applies to it again.
"""
import numpy as np

from . import batch
from ._binding import ffi, lib
from .errors import TapeMismatchError
from .tape import Term


def grad(y, x):
    """dy/dx as a Term on y's tape; for a list of terms, a list of Terms.

    >>> tape = Tape(); x = tape.term("x", 2.0)
    >>> y = x ** 4
    >>> grad(grad(grad(y, x), x), x).value        # 24 x
    48.0
    """
    if type(y) is not Term:
        raise TypeError(f"grad differentiates a Term, not {type(y).__name__}")
    tape = y.tape
    single = type(x) is Term
    if single and x.tape is not tape:
        raise TapeMismatchError("grad: y and x belong to different tapes")
    idx, n = batch.node_indices(tape, x, "x")
    out = ffi.new("uint32_t[]", max(n, 1))
    tape._check(lib.pg_grad_graph(tape._ptr, y.index, idx, n, out))
    terms = [tape._term(out[k]) for k in range(n)]
    return terms[0] if single else terms


def jacobian(ys, xs):
    """d ys[i] / d xs[j] at the current values, as an array (len(ys), len(xs)).

    One reverse sweep per output; nothing is added to the tape.
    """
    ys = [ys] if type(ys) is Term else list(ys)
    xs = [xs] if type(xs) is Term else list(xs)
    if not ys:
        return np.zeros((0, len(xs)))
    tape = ys[0].tape
    for y in ys:
        batch.check_loss(tape, y)
    rows = []
    for y in ys:
        y.backprop()
        rows.append(tape.grads(xs))
    return np.array(rows).reshape(len(ys), len(xs))


def hessian(y, xs):
    """d2y / dxs[i] dxs[j] at the current values, as an array (len(xs), len(xs)).

    The gradient is built once as a graph; each of its entries is then
    differentiated by one reverse sweep.
    """
    xs = [xs] if type(xs) is Term else list(xs)
    return jacobian(grad(y, xs), xs)
