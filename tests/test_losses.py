"""pyrograd.losses against values and gradients worked out by hand."""
import math

import numpy as np
import pytest

import pyrograd as pg
from pyrograd import losses


def value_and_grads(build, *values):
    """build(*leaves) on a new tape: its value and its gradient by each leaf."""
    tape = pg.Tape()
    leaves = [tape.term(value=v) for v in values]
    out = build(*leaves)
    out.backprop()
    return out.value, [leaf.grad for leaf in leaves]


# ---- mse


def test_mse_of_numbers_and_terms():
    assert losses.mse(3.0, 1.0) == 4.0
    value, (dp, dt) = value_and_grads(losses.mse, 3.0, 1.0)
    assert (value, dp, dt) == (4.0, 4.0, -4.0)  # 2 (p - t), -2 (p - t)


def test_mse_of_lists_is_the_mean():
    value, grads = value_and_grads(lambda a, b: losses.mse([a, b], [1.0, 1.0]), 3.0, 0.0)
    assert value == (4.0 + 1.0) / 2
    assert grads == [2.0, -1.0]  # (p - t) for each, from 2 (p - t) / 2
    with pytest.raises(ValueError, match="2 predictions need as many targets"):
        losses.mse([1.0, 2.0], [1.0])


# ---- hinge


@pytest.mark.parametrize("score, label, loss, d_score", [
    (0.3, 1.0, 0.7, -1.0),     # inside the margin: 1 - 0.3
    (2.0, 1.0, 0.0, 0.0),      # beyond the margin: no loss, no gradient
    (-0.5, -1.0, 0.5, 1.0),    # 1 - (-1)(-0.5)
    (0.5, -1.0, 1.5, 1.0),     # wrong side
])
def test_hinge(score, label, loss, d_score):
    assert losses.hinge(score, label) == pytest.approx(loss)
    value, (grad,) = value_and_grads(lambda s: losses.hinge(s, label), score)
    assert value == pytest.approx(loss)
    assert grad == d_score


def test_hinge_is_micrograds_expression():
    tape = pg.Tape()
    score, label = tape.term(value=0.25), tape.term(value=-1.0)
    assert losses.hinge(score, label).value == (1 + -(-1.0) * 0.25)


# ---- binary cross-entropy from logits


def test_binary_cross_entropy_values_and_gradient():
    assert losses.binary_cross_entropy(0.0, 1.0) == pytest.approx(math.log(2))
    assert losses.binary_cross_entropy(2.0, 0.0) == pytest.approx(math.log(1 + math.e**2))
    assert losses.binary_cross_entropy(2.0, 1.0) == pytest.approx(-math.log(1 / (1 + math.exp(-2))))
    value, (dz, dt) = value_and_grads(losses.binary_cross_entropy, 2.0, 0.25)
    assert dz == pytest.approx(1 / (1 + math.exp(-2)) - 0.25)  # sigmoid(z) - t
    assert dt == -2.0


def test_binary_cross_entropy_is_stable_for_large_logits():
    for z, t, loss, grad in [(1000.0, 1.0, 0.0, 0.0), (-1000.0, 1.0, 1000.0, -1.0),
                             (1000.0, 0.0, 1000.0, 1.0), (-1000.0, 0.0, 0.0, 0.0)]:
        value, (dz,) = value_and_grads(lambda x: losses.binary_cross_entropy(x, t), z)
        assert (value, dz) == (loss, grad)


# ---- softmax cross-entropy


def test_softmax_cross_entropy_value_and_gradient():
    logits = [1.0, 2.0, 3.0]
    exps = np.exp(logits)
    softmax = exps / exps.sum()
    assert losses.softmax_cross_entropy(logits, 2) == pytest.approx(-math.log(softmax[2]))
    value, grads = value_and_grads(lambda *z: losses.softmax_cross_entropy(list(z), 0), *logits)
    assert value == pytest.approx(-math.log(softmax[0]))
    assert grads == pytest.approx(softmax - [1, 0, 0])  # softmax minus the one-hot target


def test_softmax_cross_entropy_is_stable_for_large_logits():
    value, grads = value_and_grads(lambda a, b: losses.softmax_cross_entropy([a, b], 1), 1000.0, 0.0)
    assert value == 1000.0
    assert grads == [1.0, -1.0]


def test_softmax_cross_entropy_with_a_term_target_picks_the_same_logit():
    tape = pg.Tape()
    logits = [tape.term(value=v) for v in (0.5, -1.0, 2.0, 0.0)]
    target = tape.term("y")
    loss = losses.softmax_cross_entropy(logits, target)
    for k in range(4):
        target.set(float(k))
        assert loss.value == pytest.approx(losses.softmax_cross_entropy([0.5, -1.0, 2.0, 0.0], k), rel=1e-15)


@pytest.mark.parametrize("target", [3, -1, 1.5])
def test_softmax_cross_entropy_refuses_a_class_out_of_range(target):
    with pytest.raises(ValueError, match="is not one of 0..2"):
        losses.softmax_cross_entropy([1.0, 2.0, 3.0], target)


# ---- l2


def test_l2():
    value, grads = value_and_grads(lambda a, b, c: losses.l2([a, b, c]), 1.0, -2.0, 0.5)
    assert value == 1.0 + 4.0 + 0.25
    assert grads == [2.0, -4.0, 1.0]


# ---- the checks the Trainer runs on a column of targets


@pytest.mark.parametrize("loss, y, n_outputs, message", [
    (losses.hinge, [1.0, 0.0], 1, "hinge labels must be -1 or \\+1, not 0$"),
    (losses.hinge, [1.0, -1.0], 2, "hinge takes one score"),
    (losses.binary_cross_entropy, [0.0, 2.0], 1, "must be in \\[0, 1\\]"),
    (losses.softmax_cross_entropy, [0.0, 10.0], 10, "class index 10 is not one of 0..9"),
    (losses.softmax_cross_entropy, [0.5], 10, "class index 0.5"),
    (losses.softmax_cross_entropy, [[0.0]], 10, "one class index per sample"),
    (losses.mse, [[1.0, 2.0]], 3, "the model has 3 outputs"),
    (losses.mse, [[1.0]], 1, "the model has 1 outputs"),
])
def test_check_targets_refuses(loss, y, n_outputs, message):
    with pytest.raises(ValueError, match=message):
        loss.check_targets(np.array(y), n_outputs)


@pytest.mark.parametrize("loss, y, n_outputs", [
    (losses.hinge, [1.0, -1.0], 1),
    (losses.binary_cross_entropy, [0.0, 0.3, 1.0], 1),
    (losses.softmax_cross_entropy, [0.0, 9.0], 10),
    (losses.mse, [[1.0, 2.0, 3.0]], 3),
    (losses.mse, [0.5], 1),
])
def test_check_targets_accepts(loss, y, n_outputs):
    loss.check_targets(np.array(y), n_outputs)
