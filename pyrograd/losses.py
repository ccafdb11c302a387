"""Loss functions: each one builds the loss of one sample.

A prediction is a Term (a list of Terms for a model with several outputs),
a target is a number or a Term: the Trainer passes the leaf that every row's
target is fed into.  On plain numbers the losses return floats, which makes
them easy to check by hand.

    loss = pg.losses.hinge(model(x), 1.0)      # micrograd's max-margin loss
    loss = pg.losses.softmax_cross_entropy(model(x), 3)

Each loss carries `check_targets(y, n_outputs)`, which the Trainer runs on a
whole column of targets before training, so that a label out of range is an
error rather than a silently wrong loss.
"""
import numpy as np

from .functions import abs, exp, log, maximum, relu, softplus
from .tape import Term

__all__ = ["mse", "hinge", "binary_cross_entropy", "softmax_cross_entropy", "l2"]


def _checks_targets(check):
    """Attaches the check of a column of targets to a loss."""

    def attach(loss):
        loss.check_targets = check
        return loss

    return attach


def _total(terms):
    """sum(terms), without the constant 0 that sum() would start from."""
    terms = iter(terms)
    total = next(terms)
    for term in terms:
        total = total + term
    return total


def _check_one_output(name, y, n_outputs):
    if n_outputs != 1 or y.ndim != 1:
        raise ValueError(f"{name} takes one score and one label per sample, "
                         f"not {n_outputs} outputs and targets of shape {y.shape}")


def _check_mse(y, n_outputs):
    # One output: a column of targets; several: a row of targets per sample.
    if (y.ndim, y.shape[1:]) != ((1, ()) if n_outputs == 1 else (2, (n_outputs,))):
        raise ValueError(f"mse needs one target per output: the model has {n_outputs} "
                         f"outputs, the targets have shape {y.shape}")


@_checks_targets(_check_mse)
def mse(prediction, target):
    """Squared error (prediction - target)**2; for lists, the mean over their entries."""
    if isinstance(prediction, (list, tuple)):
        if not isinstance(target, (list, tuple)) or len(target) != len(prediction):
            raise ValueError(f"mse: {len(prediction)} predictions need as many targets")
        return _total((p - t) ** 2 for p, t in zip(prediction, target)) / len(prediction)
    return (prediction - target) ** 2


def _check_hinge(y, n_outputs):
    _check_one_output("hinge", y, n_outputs)
    bad = np.abs(y) != 1.0  # NaN too
    if np.count_nonzero(bad):
        raise ValueError(f"hinge labels must be -1 or +1, not {y[bad][0]:g}")


@_checks_targets(_check_hinge)
def hinge(score, label):
    """The SVM max-margin loss relu(1 - label * score), for a label of -1 or +1:
    zero once the score is on the label's side by a margin of 1."""
    return relu(1 + -label * score)


def _check_bce(y, n_outputs):
    _check_one_output("binary_cross_entropy", y, n_outputs)
    if not ((y >= 0) & (y <= 1)).all():
        raise ValueError("binary_cross_entropy targets must be in [0, 1] (labels are 0 or 1)")


@_checks_targets(_check_bce)
def binary_cross_entropy(logit, target):
    """-(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))) from the logit z,
    written as softplus(z) - t z, which neither overflows nor takes log(0)."""
    return softplus(logit) - target * logit


def _check_classes(y, n_outputs):
    if y.ndim != 1:
        raise ValueError(f"softmax_cross_entropy takes one class index per sample, not targets of shape {y.shape}")
    bad = (y != np.floor(y)) | (y < 0) | (y >= n_outputs)
    if bad.any():
        raise ValueError(f"class index {y[bad][0]:g} is not one of 0..{n_outputs - 1} "
                         f"(the model has {n_outputs} outputs)")


@_checks_targets(_check_classes)
def softmax_cross_entropy(logits, target):
    """-log softmax(logits)[target]: log-sum-exp of the logits minus the
    target's logit.  The largest logit is taken out before exp, so nothing
    overflows.  target is a class index: a number, or a Term holding one."""
    top = logits[0]
    for z in logits[1:]:
        top = maximum(top, z)
    # d/d top of the whole is 1 - sum(softmax) = 0: top only keeps exp in range.
    log_sum_exp = top + log(_total(exp(z - top) for z in logits))
    return log_sum_exp - _pick(logits, target)


def _pick(logits, target):
    """logits[target], also for a target that is a Term (fed a new class
    index every row): relu(1 - |target - k|) is 1 for k == target and 0 for
    every other whole number k."""
    if type(target) is Term:
        return _total(relu(1 - abs(target - k)) * z for k, z in enumerate(logits))
    if target != int(target) or not 0 <= target < len(logits):
        raise ValueError(f"class index {target!r} is not one of 0..{len(logits) - 1}")
    return logits[int(target)]


def l2(params):
    """The sum of squares of the parameters, for weight decay: alpha * l2(params)."""
    return _total(p * p for p in params)
