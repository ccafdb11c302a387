"""numpy batch I/O: values, grads, set_values, eval_batch and grad_batch.

The reference for every batch result is the plain Python loop a user would
write: set the inputs row by row, read `.value` or `backprop`, and add up
`loss.value` and each `w.grad` in row order from 0.0.  With threads=1 the
batch must give that loop's result to the last bit (compared with ==); with
more threads only the order of the partial sums changes (1e-12 relative).
"""
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyrograd as pg
from pyrograd.__main__ import gaussian_model


# ---- models ------------------------------------------------------------------------

class Model:
    """A loss with its input leaves, parameter leaves and some intermediates."""

    def __init__(self, tape, inputs, params, loss, inner, make_data):
        self.tape, self.inputs, self.params, self.loss = tape, list(inputs), list(params), loss
        self.inner = list(inner)  # intermediate (non-leaf) terms the loss depends on
        self.make_data = make_data  # (rng, rows) -> float64 array (rows, len(inputs))


def gaussian():
    """rustograd's curve-fit model: s * exp(-(x - mu)^2 / sigma / sigma), squared error."""
    tape, x, y, params, loss = gaussian_model()
    x_mu = tape._term(params[2].index + 1)  # x - mu, the first op after the leaves were made
    assert not x_mu.is_leaf and x_mu.value == x.value - params[0].value

    def make_data(rng, rows):
        xs = rng.uniform(-4, 4, rows)
        return np.ascontiguousarray(np.stack([xs, 0.75 * np.exp(-((xs - 1.2) ** 2) / 0.35)], 1))

    params[0].set(0.3)
    params[1].set(0.8)
    params[2].set(1.1)
    return Model(tape, [x, y], params, loss, [x_mu], make_data)


def mlp():
    """Two inputs, three hidden units (tanh, relu, sigmoid), maximum/minimum, a target."""
    tape = pg.Tape()
    x1, x2, target = tape.term("x1"), tape.term("x2"), tape.term("t")
    rng = np.random.default_rng(7)
    w1 = [[tape.term(f"w{i}{j}", float(rng.normal())) for j in range(2)] for i in range(3)]
    b1 = [tape.term(f"b{i}", float(rng.normal(scale=0.3))) for i in range(3)]
    w2 = [tape.term(f"v{i}", float(rng.normal())) for i in range(3)]
    b2 = tape.term("c", 0.1)
    pre = [w1[i][0] * x1 + w1[i][1] * x2 + b1[i] for i in range(3)]
    h0, h1, h2 = pg.tanh(pre[0]), pg.relu(pre[1]), pg.sigmoid(pre[2])
    m = pg.maximum(h0, h1)
    n = pg.minimum(h1, h2)
    out = w2[0] * h0 + w2[1] * m + w2[2] * n + b2 + 0.1 * pg.softplus(pre[0]) - 0.05 * pg.abs(pre[2])
    diff = out - target
    loss = diff * diff
    params = [w for row in w1 for w in row] + b1 + w2 + [b2]

    def make_data(rng, rows):
        return rng.normal(size=(rows, 3))

    return Model(tape, [x1, x2, target], params, loss, [pre[1], h0, m, out], make_data)


def powers():
    """x**2, 2**x, x**b (a term exponent), log, exp, sqrt, division."""
    tape = pg.Tape()
    a, b = tape.term("a", 0.7), tape.term("b", 1.3)
    x, y = tape.term("x", 1.0), tape.term("y", 0.5)
    u = x ** 2 * a
    v = 2 ** (x * b)
    lg = pg.log(x + a * a)
    e = pg.exp(-x * b)
    s = pg.sqrt(x * x + b)
    p = x ** b
    q = (a * x) ** 3
    r = u + v + lg + e * s + p - q / (1 + y * y) + 1 / x
    diff = r - y
    loss = diff * diff

    def make_data(rng, rows):
        return np.ascontiguousarray(np.stack([rng.uniform(0.5, 2.0, rows), rng.normal(size=rows)], 1))

    return Model(tape, [x, y], [a, b], loss, [u, v, s, r], make_data)


_RANDOM_OPS = [
    lambda a, b: pg.tanh(a * b),
    lambda a, b: 0.5 * (a + b),
    lambda a, b: a - b,
    lambda a, b: pg.sin(a) * b,
    lambda a, b: pg.maximum(a, b),
    lambda a, b: pg.minimum(a, b),
    lambda a, b: a / (1 + b * b),
    lambda a, b: pg.sigmoid(a) + 0.1 * pg.softplus(b),
    lambda a, b: pg.abs(a) * pg.cos(b),
    lambda a, b: pg.exp(-0.1 * a * a) * b,
    lambda a, b: pg.relu(a - b),
]


def random_graph(seed):
    """A random graph of ~60 ops over 3 inputs and 5 parameters (one of them unused)."""
    rng = np.random.default_rng(seed)
    tape = pg.Tape()
    inputs = [tape.term(f"x{i}") for i in range(3)]
    params = [tape.term(f"p{i}", float(rng.normal())) for i in range(5)]
    pool = inputs + params[:4]  # params[4] is never used: its grad is 0.0
    inner = []
    for _ in range(60):
        op = _RANDOM_OPS[rng.integers(len(_RANDOM_OPS))]
        a, b = (pool[int(rng.integers(len(pool)))] for _ in range(2))
        node = op(a, b)
        pool.append(node)
        inner.append(node)
    total = sum(float(c) * node for c, node in zip(rng.uniform(0.5, 1.5, 12), pool[-12:]))
    loss = total * total

    def make_data(rng, rows):
        return rng.normal(size=(rows, 3))

    return Model(tape, inputs, params, loss, inner[::7], make_data)


MODELS = {
    "gaussian": gaussian,
    "mlp": mlp,
    "powers": powers,
    "random0": lambda: random_graph(0),
    "random1": lambda: random_graph(1),
    "random2": lambda: random_graph(2),
}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


# ---- the scalar references -----------------------------------------------------------

def all_nodes(tape):
    return [tape._term(i) for i in range(len(tape))]


def snapshot(tape):
    """Every node's value and grad."""
    nodes = all_nodes(tape)
    return tape.values(nodes).copy(), tape.grads(nodes).copy()


def assert_unchanged(tape, before):
    values, grads = snapshot(tape)
    assert np.array_equal(values, before[0], equal_nan=True)
    assert np.array_equal(grads, before[1], equal_nan=True)


def scalar_eval(outputs, inputs, data):
    saved = [t.value for t in inputs]
    rows = []
    for row in data:
        for t, v in zip(inputs, row):
            t.set(float(v))
        rows.append([o.value for o in outputs])
    for t, v in zip(inputs, saved):
        t.set(v)
    return np.array(rows, dtype=np.float64).reshape(len(data), len(outputs))


def scalar_grad(loss, inputs, data, wrt, reduction="sum"):
    saved = [t.value for t in inputs]
    total = 0.0
    g = [0.0] * len(wrt)
    for row in data:
        for t, v in zip(inputs, row):
            t.set(float(v))
        loss.backprop()
        total += loss.value
        for k, w in enumerate(wrt):
            g[k] += w.grad
    for t, v in zip(inputs, saved):
        t.set(v)
    if reduction == "mean":
        return total / len(data), np.array(g) / len(data)
    return total, np.array(g, dtype=np.float64)


def scalar_grad_magnitudes(loss, inputs, data, wrt):
    """Sums of |loss| and |grad| over rows: the scale of a reordered sum's rounding."""
    saved = [t.value for t in inputs]
    total, g = 0.0, np.zeros(len(wrt))
    for row in data:
        for t, v in zip(inputs, row):
            t.set(float(v))
        loss.backprop()
        total += abs(loss.value)
        g += np.abs([w.grad for w in wrt])
    for t, v in zip(inputs, saved):
        t.set(v)
    return total, g


def assert_close_sum(got, want, scale, rel=1e-12):
    got, want, scale = np.atleast_1d(got), np.atleast_1d(want), np.atleast_1d(scale)
    assert np.all(np.abs(got - want) <= rel * np.maximum(np.abs(want), scale)), (got, want)


# Around the 8-row vectors a block's loops run over, and enough rows for
# several blocks (of up to 256 rows) split evenly, with a ragged end.
ROWS = [1, 7, 8, 9, 33, 65, 300, 601]


# ---- values, grads, set_values -----------------------------------------------------------

def test_values_grads_set_values(model):
    tape = model.tape
    terms = model.params + model.inner + [model.loss]
    got = tape.values(terms)
    assert got.dtype == np.float64 and got.shape == (len(terms),)
    assert np.array_equal(got, [t.value for t in terms])
    model.loss.backprop()
    grads = tape.grads(terms)
    assert grads.dtype == np.float64
    assert np.array_equal(grads, [t.grad for t in terms])
    assert tape.grads([model.loss])[0] == 1.0

    new = np.linspace(-0.5, 0.5, len(model.params))
    tape.set_values(model.params, new)
    assert [p.value for p in model.params] == list(new)
    assert np.array_equal(tape.values(model.params), new)
    assert tape.values([]).shape == (0,)
    # the loss follows the new parameters
    loss_after = model.loss.value
    tape.set_values(model.params, [float(v) for v in new])  # lists are accepted
    assert model.loss.value == loss_after


def test_set_grads_feeds_an_optimizer_step():
    tape = pg.Tape()
    w, b = tape.term("w", 1.0), tape.term("b", -2.0)
    loss = w * w + b
    loss.backprop()
    tape.set_grads([w, b], np.array([0.5, 4.0]))  # e.g. a data gradient plus a penalty's
    assert list(tape.grads([w, b])) == [0.5, 4.0]
    pg.optim.SGD([w, b], lr=0.1).step()
    assert list(tape.values([w, b])) == [1.0 - 0.1 * 0.5, -2.0 - 0.1 * 4.0]
    with pytest.raises(ValueError):
        tape.set_grads([w, b], np.array([1.0]))
    assert list(tape.grads([w, b])) == [0.5, 4.0]  # nothing written


def test_set_values_duplicates_last_wins():
    tape = pg.Tape()
    a = tape.term("a", 1.0)
    y = a * 3.0
    tape.set_values([a, a], np.array([2.0, 5.0]))
    assert a.value == 5.0 and y.value == 15.0


# ---- eval_batch equals the scalar loop --------------------------------------------------

@pytest.mark.parametrize("rows", ROWS)
def test_eval_batch_bit_exact_one_thread(model, rows):
    rng = np.random.default_rng(rows)
    data = model.make_data(rng, rows)
    outputs = model.inner + [model.loss]
    want = scalar_eval(outputs, model.inputs, data)
    got = model.tape.eval_batch(outputs, model.inputs, data, threads=1)
    assert got.shape == (rows, len(outputs)) and got.dtype == np.float64
    assert np.array_equal(got, want)
    single = model.tape.eval_batch(model.loss, model.inputs, data, threads=1)
    assert single.shape == (rows,)
    assert np.array_equal(single, want[:, -1])
    listed = model.tape.eval_batch([model.loss], model.inputs, data, threads=1)
    assert listed.shape == (rows, 1)


@pytest.mark.parametrize("threads", [2, 3, None])
@pytest.mark.parametrize("rows", [2, 17, 100, 333])
def test_eval_batch_threads(model, rows, threads):
    data = model.make_data(np.random.default_rng(rows + 1), rows)
    outputs = model.inner + [model.loss]
    want = scalar_eval(outputs, model.inputs, data)
    got = model.tape.eval_batch(outputs, model.inputs, data, threads=threads)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # each row is the same arithmetic whichever thread runs it
    assert np.array_equal(got, want)
    again = model.tape.eval_batch(outputs, model.inputs, data, threads=threads)
    assert np.array_equal(got, again)


def test_eval_batch_keeps_the_tape_as_it_was(model):
    tape = model.tape
    tape.set_values(model.inputs, np.full(len(model.inputs), 0.75))
    model.loss.backprop()
    before = snapshot(tape)
    data = model.make_data(np.random.default_rng(3), 40)
    for threads in (1, 2):
        tape.eval_batch([model.loss] + model.inner, model.inputs, data, threads=threads)
        assert_unchanged(tape, before)
    assert [t.value for t in model.inputs] == [0.75] * len(model.inputs)


def test_eval_batch_odd_outputs():
    """Outputs that are inputs, parameters, constants or built after the inputs' leaves."""
    tape = pg.Tape()
    p = tape.term("p", 2.5)
    k = tape.const(4.0)
    pk = p * k  # depends on no input
    x, y = tape.term("x", 9.0), tape.term("y", 8.0)
    z = x * p + y
    data = np.arange(34.0).reshape(17, 2)
    outputs = [x, p, k, pk, z, y, z, x]  # duplicates too
    got = tape.eval_batch(outputs, [x, y], data, threads=1)
    want = np.stack([data[:, 0], np.full(17, 2.5), np.full(17, 4.0), np.full(17, 10.0),
                     data[:, 0] * 2.5 + data[:, 1], data[:, 1], data[:, 0] * 2.5 + data[:, 1],
                     data[:, 0]], 1)
    assert np.array_equal(got, want)
    assert np.array_equal(got, scalar_eval(outputs, [x, y], data))
    assert (x.value, y.value, z.value) == (9.0, 8.0, 30.5)
    # duplicate inputs: as with successive set() calls, the last column wins
    got = tape.eval_batch(z, [x, y, x], np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), threads=1)
    assert list(got) == [3.0 * 2.5 + 2.0, 6.0 * 2.5 + 5.0]
    # no outputs, and no inputs
    assert tape.eval_batch([], [x, y], data).shape == (17, 0)
    assert list(tape.eval_batch(pk, [], np.empty((3, 0)))) == [10.0] * 3


def test_eval_batch_zero_rows(model):
    before = snapshot(model.tape)
    empty = np.empty((0, len(model.inputs)))
    assert model.tape.eval_batch(model.loss, model.inputs, empty).shape == (0,)
    assert model.tape.eval_batch([model.loss, model.loss], model.inputs, empty, threads=2).shape == (0, 2)
    assert_unchanged(model.tape, before)


def test_eval_batch_picks_up_set_and_optimizer_changes(model):
    data = model.make_data(np.random.default_rng(5), 20)
    first = model.tape.eval_batch(model.loss, model.inputs, data, threads=1)
    g = model.tape.grad_batch(model.loss, model.inputs, data, model.params)[1]
    p = model.params[int(np.argmax(np.abs(g)))]
    p.set(p.value + 0.25)
    second = model.tape.eval_batch(model.loss, model.inputs, data, threads=1)
    assert np.array_equal(second, scalar_eval([model.loss], model.inputs, data)[:, 0])
    assert not np.array_equal(first, second)


# ---- grad_batch equals the scalar loop -------------------------------------------------

@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("rows", ROWS)
def test_grad_batch_bit_exact_one_thread(model, rows, reduction):
    data = model.make_data(np.random.default_rng(rows + 10), rows)
    wrt = model.params
    want_loss, want_grads = scalar_grad(model.loss, model.inputs, data, wrt, reduction)
    model.loss.backprop()  # grads the batch must replace
    loss, grads = model.tape.grad_batch(model.loss, model.inputs, data, wrt, reduction=reduction, threads=1)
    assert type(loss) is float
    assert grads.shape == (len(wrt),) and grads.dtype == np.float64
    assert loss == want_loss
    assert np.array_equal(grads, want_grads)
    # the gradient is left in .grad of the wrt terms
    assert np.array_equal(model.tape.grads(wrt), want_grads)
    assert [w.grad for w in wrt] == list(want_grads)


@pytest.mark.parametrize("threads", [2, 3, None])
@pytest.mark.parametrize("rows", [2, 17, 100, 1001])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_grad_batch_threads(model, rows, threads, reduction):
    data = model.make_data(np.random.default_rng(rows + 20), rows)
    wrt = model.params + model.inner
    want_loss, want_grads = scalar_grad(model.loss, model.inputs, data, wrt, reduction)
    scale_loss, scale_grads = scalar_grad_magnitudes(model.loss, model.inputs, data, wrt)
    if reduction == "mean":
        scale_loss, scale_grads = scale_loss / rows, scale_grads / rows
    loss, grads = model.tape.grad_batch(model.loss, model.inputs, data, wrt, reduction, threads=threads)
    assert_close_sum(loss, want_loss, scale_loss)
    assert_close_sum(grads, want_grads, scale_grads)
    assert np.array_equal(model.tape.grads(wrt), grads)
    # deterministic: the same call gives the same bits
    for _ in range(3):
        loss2, grads2 = model.tape.grad_batch(model.loss, model.inputs, data, wrt, reduction, threads=threads)
        assert loss2 == loss and np.array_equal(grads2, grads)


# ---- a tape keeps its last batch's plan and workspace for the same request ---------------

def test_a_repeated_batch_follows_new_data_new_parameters_and_a_grown_tape(model):
    rng = np.random.default_rng(11)
    for step in range(4):
        data = model.make_data(rng, 40)
        want = scalar_grad(model.loss, model.inputs, data, model.params, "mean")
        got = model.tape.grad_batch(model.loss, model.inputs, data, model.params, "mean", threads=1)
        assert got[0] == want[0] and np.array_equal(got[1], want[1])
        p = model.params[step % len(model.params)]
        p.set(p.value + 0.125)                            # the plan must read the new value
        model.inputs[0] * model.params[0] + pg.exp(model.loss)  # and survive a longer tape


def test_a_repeated_batch_with_other_rows_or_outputs_is_planned_again(model):
    rng = np.random.default_rng(12)
    for rows in (30, 30, 7, 30):
        data = model.make_data(rng, rows)
        got = model.tape.eval_batch([model.loss], model.inputs, data, threads=1)
        assert np.array_equal(got, scalar_eval([model.loss], model.inputs, data))
        want = scalar_grad(model.loss, model.inputs, data, model.params, "sum")
        got = model.tape.grad_batch(model.loss, model.inputs, data, model.params, threads=1)
        assert got[0] == want[0] and np.array_equal(got[1], want[1])


def test_the_kept_batch_counts_in_the_tapes_memory(model):
    before = model.tape.memory
    model.tape.grad_batch(model.loss, model.inputs, model.make_data(np.random.default_rng(13), 50), model.params)
    assert model.tape.memory > before


def test_a_big_batch_is_not_kept():
    tape = pg.Tape()
    x = tape.term("x")
    y = x
    for _ in range(100_000):  # 100,000 slots of 32 rows: over 4 MB of workspace
        y = y * 0.5 + x
    before = tape.memory
    tape.eval_batch(y, [x], np.ones((64, 1)), threads=1)
    assert tape.memory == before


# ---- a penalty: a term of the parameters alone, added once -----------------------------

def l2_of(params):
    total = params[0] * params[0]
    for p in params[1:]:
        total = total + p * p
    return 1e-3 * total


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_grad_batch_penalty_equals_adding_it_by_hand(model, reduction, threads):
    penalty = l2_of(model.params)
    data = model.make_data(np.random.default_rng(7), 40)
    loss, grads = model.tape.grad_batch(model.loss, model.inputs, data, model.params, reduction, threads)
    penalty.backprop()
    want_grads = grads + model.tape.grads(model.params)
    got_loss, got_grads = model.tape.grad_batch(model.loss, model.inputs, data, model.params, reduction,
                                                threads, penalty=penalty)
    assert got_loss == loss + penalty.value
    assert np.array_equal(got_grads, want_grads)
    assert np.array_equal(model.tape.grads(model.params), want_grads)


def test_grad_batch_penalty_refuses_a_term_of_the_inputs(model):
    data = model.make_data(np.random.default_rng(8), 5)
    before = model.tape.grad_batch(model.loss, model.inputs, data, model.params)
    bad = l2_of(model.params) + model.inputs[0] * 2
    with pytest.raises(pg.PyrogradError, match="penalty .* depends on input 0"):
        model.tape.grad_batch(model.loss, model.inputs, data, model.params, penalty=bad)
    with pytest.raises(TypeError, match="penalty must be a Term"):
        model.tape.grad_batch(model.loss, model.inputs, data, model.params, penalty=1.0)
    with pytest.raises(pg.TapeMismatchError):
        model.tape.grad_batch(model.loss, model.inputs, data, model.params, penalty=pg.Tape().term("p"))
    after = model.tape.grad_batch(model.loss, model.inputs, data, model.params)
    assert after[0] == before[0] and np.array_equal(after[1], before[1])


def test_optimizer_run_with_a_penalty_equals_the_python_loop(model):
    data = model.make_data(np.random.default_rng(9), 30)
    penalty = l2_of(model.params)
    start = model.tape.values(model.params)
    sgd = pg.optim.SGD(model.params, lr=0.01)
    want = []
    for _ in range(5):
        want.append(model.tape.grad_batch(model.loss, model.inputs, data, model.params, "mean",
                                          threads=1, penalty=penalty)[0])
        sgd.step()
    want_params = model.tape.values(model.params)
    model.tape.set_values(model.params, start)
    got = pg.optim.SGD(model.params, lr=0.01).run(model.loss, model.inputs, data, 5, "mean",
                                                  threads=1, penalty=penalty)
    assert list(got) == want
    assert np.array_equal(model.tape.values(model.params), want_params)


def test_grad_batch_threads_equal_one_thread_when_rows_fit_one_thread():
    m = gaussian()
    data = m.make_data(np.random.default_rng(0), 1)
    a = m.tape.grad_batch(m.loss, m.inputs, data, m.params, threads=1)
    b = m.tape.grad_batch(m.loss, m.inputs, data, m.params, threads=4)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_grad_batch_keeps_values(model):
    tape = model.tape
    tape.set_values(model.inputs, np.full(len(model.inputs), 0.5))
    values_before = snapshot(tape)[0]
    data = model.make_data(np.random.default_rng(1), 37)
    for threads in (1, 2):
        tape.grad_batch(model.loss, model.inputs, data, model.params, threads=threads)
        assert np.array_equal(snapshot(tape)[0], values_before, equal_nan=True)
    assert [t.value for t in model.inputs] == [0.5] * len(model.inputs)


def test_grad_batch_zero_rows(model):
    empty = np.empty((0, len(model.inputs)))
    model.loss.backprop()  # nonzero grads the batch must replace by zeros
    loss, grads = model.tape.grad_batch(model.loss, model.inputs, empty, model.params)
    assert loss == 0.0 and np.array_equal(grads, np.zeros(len(model.params)))
    assert np.array_equal(model.tape.grads(model.params), np.zeros(len(model.params)))
    loss, grads = model.tape.grad_batch(model.loss, model.inputs, empty, model.params, threads=2)
    assert loss == 0.0 and not grads.any()

    model.loss.backprop()
    before = snapshot(model.tape)
    with pytest.raises((ValueError, pg.PyrogradError), match="mean"):
        model.tape.grad_batch(model.loss, model.inputs, empty, model.params, reduction="mean")
    assert_unchanged(model.tape, before)


def test_grad_batch_wrt_unused_non_leaf_duplicate_and_input():
    tape = pg.Tape()
    w, b, unused_early = tape.term("w", 0.7), tape.term("b", -0.2), tape.term("u", 3.0)
    w2 = w * w  # an intermediate that depends on no input
    x, y = tape.term("x"), tape.term("y")
    h = pg.tanh(w2 * x + b)  # an intermediate on the input
    diff = h - y
    loss = diff * diff
    after = tape.term("after", 1.0)  # built after the loss
    after_op = loss * after
    wrt = [w, b, unused_early, w2, h, loss, after, after_op, w, x, h]
    data = np.random.default_rng(4).normal(size=(37, 2))
    want_loss, want = scalar_grad(loss, [x, y], data, wrt)
    got_loss, got = tape.grad_batch(loss, [x, y], data, wrt, threads=1)
    assert got_loss == want_loss
    assert np.array_equal(got, want)
    # the expectations the scalar loop itself must meet
    assert got[2] == 0.0 and got[6] == 0.0 and got[7] == 0.0
    assert got[5] == 37.0  # d loss / d loss per row
    assert got[0] == got[8] and got[4] == got[10]
    assert got[0] != 0.0 and got[3] != 0.0 and got[9] != 0.0
    # grad of an intermediate is its adjoint: d loss/d h = 2 (h - y)
    hs = np.tanh(0.49 * data[:, 0] - 0.2)
    assert got[4] == pytest.approx(np.sum(2 * (hs - data[:, 1])), rel=1e-12)
    # and chain rule through w2: d/dw = d/dw2 * 2w
    assert got[0] == pytest.approx(got[3] * 1.4, rel=1e-12)
    assert [t.grad for t in wrt] == list(got)

    got_loss2, got2 = tape.grad_batch(loss, [x, y], data, wrt, threads=2)
    assert_close_sum(got2, want, scalar_grad_magnitudes(loss, [x, y], data, wrt)[1])


def test_grad_batch_duplicate_inputs_last_column_wins():
    tape = pg.Tape()
    w = tape.term("w", 2.0)
    x = tape.term("x")
    loss = w * x * x
    data = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, -1.0]])
    total, g = tape.grad_batch(loss, [x, x], data, [w, x], threads=1)
    assert total == 2.0 * (4 + 16 + 1)
    assert list(g) == [21.0, 2.0 * 2 * (2 + 4 - 1)]
    want_total, want = scalar_grad(loss, [x, x], data, [w, x])
    assert total == want_total and np.array_equal(g, want)


def test_grad_batch_empty_wrt_and_no_inputs():
    tape = pg.Tape()
    w = tape.term("w", 3.0)
    loss = w * w
    total, g = tape.grad_batch(loss, [], np.empty((5, 0)), [])
    assert total == 45.0 and g.shape == (0,)
    total, g = tape.grad_batch(loss, [], np.empty((5, 0)), [w], reduction="mean", threads=2)
    assert total == 9.0 and list(g) == [6.0]


def test_grad_batch_wrt_single_term():
    m = gaussian()
    data = m.make_data(np.random.default_rng(9), 10)
    total, g = m.tape.grad_batch(m.loss, m.inputs, data, m.params[0], threads=1)
    want_total, want = scalar_grad(m.loss, m.inputs, data, [m.params[0]])
    assert total == want_total and g.shape == (1,) and g[0] == want[0]


def test_gaussian_grad_matches_hand_derivation():
    """Independent of the tape: the analytic gradient of the curve-fit loss."""
    m = gaussian()
    mu, sigma, s = (p.value for p in m.params)
    data = m.make_data(np.random.default_rng(11), 80)
    xs, ys = data[:, 0], data[:, 1]
    e = np.exp(-((xs - mu) ** 2) / sigma ** 2)
    r = s * e - ys
    want = [np.sum(2 * r * s * e * 2 * (xs - mu) / sigma ** 2),
            np.sum(2 * r * s * e * 2 * (xs - mu) ** 2 / sigma ** 3),
            np.sum(2 * r * e)]
    total, g = m.tape.grad_batch(m.loss, m.inputs, data, m.params)
    assert total == pytest.approx(np.sum(r * r), rel=1e-12)
    np.testing.assert_allclose(g, want, rtol=1e-10)


@pytest.mark.parametrize("layers", [13_000, 100_000])
def test_big_models_run_in_smaller_blocks(layers):
    """Over ~16k nodes a block holds 8 rows, and fewer over ~260k nodes (1
    row at 300k): the results must not change."""
    tape = pg.Tape()
    x, y = tape.term("x"), tape.term("y")
    w, b = tape.term("w", 0.5), tape.term("b", 0.1)
    h = x
    for _ in range(layers):
        h = pg.tanh(h * w + x)
    diff = h + b - y
    loss = diff * diff
    data = np.random.default_rng(layers).normal(size=(29, 2))
    want = scalar_grad(loss, [x, y], data, [w, b, x])
    got = tape.grad_batch(loss, [x, y], data, [w, b, x], threads=1)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    got2 = tape.grad_batch(loss, [x, y], data, [w, b, x], threads=2)
    assert_close_sum(got2[1], want[1], scalar_grad_magnitudes(loss, [x, y], data, [w, b, x])[1])
    outs = [h, loss]
    assert np.array_equal(tape.eval_batch(outs, [x, y], data, threads=2), scalar_eval(outs, [x, y], data))


def test_infinities_and_nans_in_data_match_the_scalar_loop():
    """IEEE specials flow through a batch exactly as through set/backprop,
    including a zero adjoint that must not turn 0 * inf into NaN."""
    tape = pg.Tape()
    w = tape.term("w", 0.5)
    x, gate = tape.term("x"), tape.term("gate")
    lg = pg.log(x)                      # -inf at x = 0, NaN below
    loss = gate * lg * w + pg.sqrt(x * x) * w + pg.maximum(x, w) + pg.minimum(x, 0.0)
    data = np.array([[0.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [np.inf, 1.0], [np.nan, 1.0],
                     [np.nan, 0.0], [2.0, 1.0], [-np.inf, 0.0], [0.5, 0.0], [1.0, np.inf]] * 2)
    with np.errstate(all="ignore"):
        want_eval = scalar_eval([lg, loss], [x, gate], data)
        want_loss, want = scalar_grad(loss, [x, gate], data[8:9], [w, x, gate])
    assert np.array_equal(tape.eval_batch([lg, loss], [x, gate], data, threads=1), want_eval, equal_nan=True)
    assert np.array_equal(tape.eval_batch([lg, loss], [x, gate], data, threads=2), want_eval, equal_nan=True)
    for rows in (slice(0, 1), slice(0, 3), slice(0, 20), slice(8, 9)):
        part = np.ascontiguousarray(data[rows])
        want_loss, want = scalar_grad(loss, [x, gate], part, [w, x, gate])
        got_loss, got = tape.grad_batch(loss, [x, gate], part, [w, x, gate], threads=1)
        assert np.array_equal([got_loss, *got], [want_loss, *want], equal_nan=True), (rows, got, want)
    # at x = 0 sqrt has an infinite derivative; with gate = 0 its adjoint is 0,
    # and 0 * inf must not make x's grad NaN
    root = w * gate * pg.sqrt(x) + w
    for threads in (1, 2):
        got_loss, got = tape.grad_batch(root, [x, gate], np.zeros((20, 2)), [x, w], threads=threads)
        assert got_loss == 10.0 and list(got) == [0.0, 20.0]


def test_batches_do_not_evaluate_the_tape_at_the_inputs_current_values():
    """The scalar loop never evaluates the loss at the input leaves' values from
    before the batch (it sets a row first), so neither may a batch: here the
    current x = 0 is outside a user function's domain, every row is inside it."""
    tape = pg.Tape()
    x, w = tape.term("x"), tape.term("w", 1.0)
    z = pg.apply(x * w, "mylog", math.log, lambda v: 1 / v)  # math.log(0.0) raises
    loss = z * z
    data = np.array([[1.5], [2.0], [3.0]])
    want = scalar_eval([loss], [x], data)[:, 0]
    want_loss, want_grads = scalar_grad(loss, [x], data, [w])
    assert np.array_equal(tape.eval_batch(loss, [x], data, threads=1), want)
    got_loss, got = tape.grad_batch(loss, [x], data, [w], threads=1)
    assert got_loss == want_loss and np.array_equal(got, want_grads)
    opt = pg.optim.SGD([w], lr=0.01)
    losses = opt.run(loss, [x], data, 2, threads=1)
    assert losses[0] == want_loss


# ---- user functions (apply) in a batch --------------------------------------------------

class Boom(Exception):
    pass


def _apply_model(f, df):
    tape = pg.Tape()
    w = tape.term("w", 0.5)
    x, y = tape.term("x"), tape.term("y")
    z = pg.apply(x * w, "mysin", f, df)
    diff = z - y
    loss = diff * diff
    return tape, w, x, y, z, loss


def test_apply_in_a_batch_matches_the_scalar_loop():
    tape, w, x, y, z, loss = _apply_model(math.sin, math.cos)
    data = np.random.default_rng(2).normal(size=(45, 2))
    assert np.array_equal(tape.eval_batch([z, loss], [x, y], data, threads=1),
                          scalar_eval([z, loss], [x, y], data))
    want = scalar_grad(loss, [x, y], data, [w])
    got = tape.grad_batch(loss, [x, y], data, [w], threads=1)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    got2 = tape.grad_batch(loss, [x, y], data, [w], threads=2)
    assert got2[0] == pytest.approx(want[0], rel=1e-12)
    assert got2[1][0] == pytest.approx(want[1][0], rel=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("fails", ["f", "df"])
def test_apply_raising_in_a_batch(threads, fails):
    error = Boom("row 40 is bad")

    def f(v):
        if fails == "f" and v == 20.0:  # x = 40, w = 0.5
            raise error
        return math.sin(v)

    def df(v):
        if fails == "df" and v == 20.0:
            raise error
        return math.cos(v)

    tape, w, x, y, z, loss = _apply_model(f, df)
    x.set(1.0)
    loss.backprop()
    before = snapshot(tape)
    data = np.stack([np.arange(48.0), np.zeros(48)], 1)  # row 40 is in the last thread's share

    if fails == "f":
        with pytest.raises(Boom) as excinfo:
            tape.eval_batch([z, loss], [x, y], data, threads=threads)
        assert excinfo.value is error
        assert_unchanged(tape, before)
    else:
        got = tape.eval_batch([z, loss], [x, y], data, threads=threads)
        assert np.array_equal(got, scalar_eval([z, loss], [x, y], data))

    with pytest.raises(Boom) as excinfo:
        tape.grad_batch(loss, [x, y], data, [w], threads=threads)
    assert excinfo.value is error
    assert_unchanged(tape, before)

    # the tape still works: batches without the bad row, and scalar sweeps
    good = data[:40]
    assert np.array_equal(tape.eval_batch(loss, [x, y], good, threads=threads),
                          scalar_eval([loss], [x, y], good)[:, 0])
    want = scalar_grad(loss, [x, y], good, [w])
    got = tape.grad_batch(loss, [x, y], good, [w], threads=1)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    got = tape.grad_batch(loss, [x, y], good, [w], threads=threads)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    x.set(2.0)
    loss.backprop()
    assert loss.value == (math.sin(1.0)) ** 2
    assert w.grad == pytest.approx(2 * math.sin(1.0) * math.cos(1.0) * 2.0, rel=1e-15)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_first_failing_row_raises_deterministically(threads):
    """Many rows fail, each with its own exception object: the batch raises the
    one the scalar loop raises (the first failing row's), every time, however
    the threads are timed."""
    def f(v):
        if v >= 3:
            raise Boom(v)
        return math.sin(v)

    tape = pg.Tape()
    x, w = tape.term("x"), tape.term("w", 1.0)
    loss = pg.apply(x * w, "s", f, math.cos) ** 2
    data = np.arange(200.0).reshape(-1, 1)
    with pytest.raises(Boom) as excinfo:
        scalar_eval([loss], [x], data)
    x.set(0.0)
    assert excinfo.value.args == (3.0,)
    seen = set()
    for _ in range(30):
        for call in (lambda: tape.eval_batch(loss, [x], data, threads=threads),
                     lambda: tape.grad_batch(loss, [x], data, [w], threads=threads)):
            with pytest.raises(Boom) as excinfo:
                call()
            seen.add(excinfo.value.args)
    assert seen == {(3.0,)}


def test_the_scalar_loops_error_among_two_functions():
    """Row 3 fails in the second function, row 5 in the first: row by row
    (the scalar loop) row 3's error comes first."""
    def g(v):
        if v == 5:
            raise Boom("g at row 5")
        return v

    def h(v):
        if v == 3:
            raise Boom("h at row 3")
        return v

    tape = pg.Tape()
    x = tape.term("x")
    out = pg.apply(pg.apply(x, "g", g, lambda v: 1.0), "h", h, lambda v: 1.0)
    data = np.arange(10.0).reshape(-1, 1)
    with pytest.raises(Boom, match="h at row 3"):
        scalar_eval([out], [x], data)
    x.set(0.0)
    with pytest.raises(Boom, match="h at row 3"):
        tape.eval_batch(out, [x], data, threads=1)


def test_one_thread_stays_on_the_callers_thread():
    import threading

    idents = set()

    def f(v):
        idents.add(threading.get_ident())
        return math.sin(v)

    tape, w, x, y, z, loss = _apply_model(f, math.cos)
    data = np.random.default_rng(0).normal(size=(100, 2))
    tape.eval_batch(loss, [x, y], data, threads=1)
    tape.grad_batch(loss, [x, y], data, [w], threads=1)
    pg.optim.SGD([w], lr=0.01).run(loss, [x, y], data, 2, threads=1)
    assert idents == {threading.get_ident()}
    idents.clear()
    tape.eval_batch(loss, [x, y], data, threads=2)
    assert len(idents) == 2  # two workers, each with its share of the rows


def test_apply_not_called_for_rows_whose_adjoint_is_zero():
    calls = []

    def df(v):
        calls.append(v)
        return math.cos(v)

    tape = pg.Tape()
    w = tape.term("w", 1.0)
    x, gate = tape.term("x"), tape.term("gate")
    loss = pg.apply(x * w, "s", math.sin, df) * gate
    data = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    tape.grad_batch(loss, [x, gate], data, [w], threads=1)
    assert calls == [2.0]


# ---- bad input: a clear exception and nothing written -------------------------------

@pytest.fixture
def primed():
    """The MLP model with distinctive values and grads in every node."""
    m = mlp()
    m.tape.set_values(m.inputs, np.array([0.3, -0.4, 0.2]))
    m.loss.backprop()
    return m


def _bad_data(m):
    good = m.make_data(np.random.default_rng(0), 20)
    wide = np.ascontiguousarray(np.concatenate([good, good], 1))
    return {
        "float32": (good.astype(np.float32), TypeError, "float64"),
        "int": (np.arange(60).reshape(20, 3), TypeError, "float64"),
        "one-dimensional": (good[:, 0].copy(), ValueError, "shape"),
        "three-dimensional": (good.reshape(20, 3, 1), ValueError, "shape"),
        "too few columns": (np.ascontiguousarray(good[:, :2]), ValueError, "shape"),
        "too many columns": (wide, ValueError, "shape"),
        "transposed": (np.ascontiguousarray(good.T).T, ValueError, "contiguous"),
        "fortran": (np.asfortranarray(good), ValueError, "contiguous"),
        "strided rows": (np.ascontiguousarray(np.repeat(good, 2, 0))[::2], ValueError, "contiguous"),
        "column slice": (wide[:, :3], ValueError, "contiguous"),
        "reversed": (good[::-1], ValueError, "contiguous"),
        "not an array": ("data", TypeError, "numpy"),
        "ragged list": ([[1.0, 2.0, 3.0], [1.0, 2.0]], ValueError, None),
    }


_BAD_DATA_KEYS = sorted(_bad_data(mlp()))


@pytest.mark.parametrize("case", _BAD_DATA_KEYS)
@pytest.mark.parametrize("call", ["eval_batch", "grad_batch"])
def test_bad_data(primed, case, call):
    m = primed
    data, error, words = _bad_data(m)[case]
    before = snapshot(m.tape)
    with pytest.raises(error, match=words):
        if call == "eval_batch":
            m.tape.eval_batch(m.loss, m.inputs, data, threads=1)
        else:
            m.tape.grad_batch(m.loss, m.inputs, data, m.params, threads=1)
    assert_unchanged(m.tape, before)


def test_read_only_data_is_accepted(primed):
    m = primed
    data = m.make_data(np.random.default_rng(0), 20)
    want = m.tape.grad_batch(m.loss, m.inputs, data, m.params, threads=1)
    data.setflags(write=False)
    got = m.tape.grad_batch(m.loss, m.inputs, data, m.params, threads=1)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    assert np.array_equal(m.tape.eval_batch(m.loss, m.inputs, data), scalar_eval([m.loss], m.inputs, data)[:, 0])


def _other_tape_term():
    other = pg.Tape()
    t = other.term("alien", 1.0)
    return t, t * 2.0


def _bad_calls():
    """(name, call(m, data), expected exception)."""
    alien_leaf, alien_op = _other_tape_term()
    return {
        "input of another tape": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs[:2] + [alien_leaf], d, m.params),
                                  pg.TapeMismatchError),
        "eval input of another tape": (lambda m, d: m.tape.eval_batch(m.loss, m.inputs[:2] + [alien_leaf], d),
                                       pg.TapeMismatchError),
        "output of another tape": (lambda m, d: m.tape.eval_batch([m.loss, alien_op], m.inputs, d),
                                   pg.TapeMismatchError),
        "single output of another tape": (lambda m, d: m.tape.eval_batch(alien_op, m.inputs, d),
                                          pg.TapeMismatchError),
        "wrt of another tape": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs, d, m.params + [alien_leaf]),
                                pg.TapeMismatchError),
        "loss of another tape": (lambda m, d: m.tape.grad_batch(alien_op, m.inputs, d, m.params),
                                 pg.TapeMismatchError),
        "non-leaf input": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs[:2] + [m.inner[0]], d, m.params),
                           pg.NotALeafError),
        "eval non-leaf input": (lambda m, d: m.tape.eval_batch(m.loss, m.inputs[:2] + [m.inner[0]], d),
                                pg.NotALeafError),
        "constant input": (lambda m, d: m.tape.eval_batch(m.loss, m.inputs[:2] + [m.tape.const(1.0)], d),
                           pg.NotALeafError),
        "float in inputs": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs[:2] + [1.0], d, m.params),
                            TypeError),
        "None in wrt": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs, d, m.params + [None]), TypeError),
        "str in outputs": (lambda m, d: m.tape.eval_batch([m.loss, "loss"], m.inputs, d), TypeError),
        "inputs not a sequence": (lambda m, d: m.tape.eval_batch(m.loss, 3, d), TypeError),
        "loss not a term": (lambda m, d: m.tape.grad_batch(1.0, m.inputs, d, m.params), TypeError),
        "reduction max": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs, d, m.params, reduction="max"),
                          ValueError),
        "reduction None": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs, d, m.params, reduction=None),
                           ValueError),
        "threads 0": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs, d, m.params, threads=0), ValueError),
        "threads -1": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs, d, m.params, threads=-1), ValueError),
        "threads 1.5": (lambda m, d: m.tape.grad_batch(m.loss, m.inputs, d, m.params, threads=1.5), ValueError),
        "eval threads 0": (lambda m, d: m.tape.eval_batch(m.loss, m.inputs, d, threads=0), ValueError),
        "set_values non-leaf": (lambda m, d: m.tape.set_values(m.params + [m.inner[0]], np.zeros(len(m.params) + 1)),
                                pg.NotALeafError),
        "set_values of another tape": (lambda m, d: m.tape.set_values(m.params + [alien_leaf],
                                                                      np.zeros(len(m.params) + 1)),
                                       pg.TapeMismatchError),
        "set_values too short": (lambda m, d: m.tape.set_values(m.params, np.zeros(len(m.params) - 1)), ValueError),
        "set_values float32": (lambda m, d: m.tape.set_values(m.params, np.zeros(len(m.params), np.float32)),
                               TypeError),
        "set_values strided": (lambda m, d: m.tape.set_values(m.params, np.zeros(2 * len(m.params))[::2]),
                               ValueError),
        "values of another tape": (lambda m, d: m.tape.values([m.loss, alien_op]), pg.TapeMismatchError),
        "grads with a float": (lambda m, d: m.tape.grads([m.loss, 2.0]), TypeError),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_bad_arguments(primed, case):
    m = primed
    call, error = _bad_calls()[case]
    data = m.make_data(np.random.default_rng(0), 20)
    before = snapshot(m.tape)
    with pytest.raises(error) as excinfo:
        call(m, data)
    assert str(excinfo.value)
    after = snapshot(m.tape)
    n = len(before[0])  # "constant input" appends a node: compare the original ones
    assert np.array_equal(after[0][:n], before[0]) and np.array_equal(after[1][:n], before[1])
    # and the tape still works
    want = scalar_grad(m.loss, m.inputs, data, m.params)
    got = m.tape.grad_batch(m.loss, m.inputs, data, m.params, threads=1)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])


# ---- inputs built after the outputs ---------------------------------------------------

_LATE_INPUT = textwrap.dedent("""
    import numpy as np, pyrograd as pg
    t = pg.Tape()
    w = t.term("w", 2.0)
    y = w * w
    pad = [t.const(1.0) for _ in range({pad})]
    x = t.term("x", 0.0)   # an input the outputs do not depend on, made after them
    data = np.full((64, 1), 1e300)
    for _ in range(20):
        assert list(t.{call}) == {want}
    print("ok")
""")


@pytest.mark.parametrize("pad", [0, 200])
@pytest.mark.parametrize("call, want", [
    ("eval_batch(y, [x], data, threads=1)", "[4.0] * 64"),
    ("eval_batch([y, w], [x], data, threads=2)[:, 0]", "[4.0] * 64"),
    ("grad_batch(y, [x], data, [w], threads=1)[1]", "[256.0]"),
    ("grad_batch(y, [x], data, [w], threads=2)[1]", "[256.0]"),
    ("grad_batch(y, [w, x], np.ones((64, 2)), [x, w], threads=1)[1]", "[0.0, 128.0]"),
])
def test_input_made_after_the_outputs(pad, call, want):
    """An input leaf with a higher index than every output (or the loss) is legal:
    the outputs just do not depend on it.  Run in a subprocess: a write past the
    batch workspace would crash the interpreter."""
    code = _LATE_INPUT.format(pad=pad, call=call, want=want)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "ok"


# ---- fused multiply-add chains -----------------------------------------------------------
# A plan runs b + w1 x1 + w2 x2 + ... as one instruction (batch.c, fuse_chains).
# These graphs mix such chains with everything that must stop or change a
# fusion: factors shared within and across chains, x * x, a start that is
# also a factor, both orders of the add, a chain's inner node read elsewhere
# or asked for (as an output or in wrt), other nodes in between.

from hypothesis import given, settings
from hypothesis import strategies as st

_SPECIALS = st.sampled_from([0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, np.nan, 1e308, 3e-310])


@st.composite
def chain_graphs(draw):
    tape = pg.Tape()
    inputs = [tape.term(f"x{i}") for i in range(3)]
    params = [tape.term(f"w{i}", draw(st.floats(-2, 2))) for i in range(4)]
    pool = inputs + params
    inner = []  # chain nodes that may be asked for, or read again, later
    pick = lambda: pool[draw(st.integers(0, len(pool) - 1))]  # noqa: E731
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["chain", "chain", "other", "reuse"]))
        if kind == "chain":
            c = pick()
            for _ in range(draw(st.integers(1, 5))):
                p = pick()
                q = p if draw(st.booleans()) and draw(st.booleans()) else pick()
                m = p * q
                c = c + m if draw(st.booleans()) else m + c
                inner += [m, c]
            pool.append(c)
        elif kind == "other":
            a, b = pick(), pick()
            pool.append(draw(st.sampled_from([lambda: pg.tanh(a) - b, lambda: a * b, lambda: a - b * a]))())
        elif inner:
            pool.append(inner[draw(st.integers(0, len(inner) - 1))] * pick())
    terms = pool[7:] or pool
    loss = terms[0] * terms[0]
    for t in terms[1:]:
        loss = loss + 0.25 * t
    extra = [inner[draw(st.integers(0, len(inner) - 1))] for _ in range(draw(st.integers(0, 2)))] if inner else []
    wrt = params + extra
    outputs = [loss] + extra + [terms[-1]]
    rows = draw(st.sampled_from([1, 3, 8, 33, 300]))
    data = np.array(draw(st.lists(st.one_of(st.floats(-3, 3), _SPECIALS), min_size=3 * rows, max_size=3 * rows)))
    return tape, inputs, wrt, outputs, loss, data.reshape(rows, 3)


@settings(max_examples=150, deadline=None)
@given(chain_graphs())
def test_fused_chains_give_the_scalar_loops_bits(graph):
    tape, inputs, wrt, outputs, loss, data = graph
    with np.errstate(all="ignore"):
        want_values = scalar_eval(outputs, inputs, data)
        want_loss, want_grads = scalar_grad(loss, inputs, data, wrt)
    assert same_bits(tape.eval_batch(outputs, inputs, data, threads=1), want_values)
    total, grads = tape.grad_batch(loss, inputs, data, wrt, threads=1)
    assert same_bits([total], [want_loss])
    assert same_bits(grads, want_grads)


def same_bits(x, y):
    """Equal to the bit, -0.0 and 0.0 apart; but any NaN equals any NaN (C
    does not say which operand's NaN x + y keeps, and compilers swap them)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    nan = np.isnan(x)
    return np.array_equal(nan, np.isnan(y)) and np.array_equal(x[~nan].view(np.uint64), y[~nan].view(np.uint64))


def _inner_sum_read_again(x, y, w1, w2):
    c1 = y + w1 * x
    return (c1 + w2 * y) * c1


def _inner_product_read_again(x, y, w1, w2):
    m = w1 * x
    return (y + m + w2 * x) * m


def _a_node_between_two_links(x, y, w1, w2):
    c1 = y + w1 * x
    z = pg.tanh(y)
    return c1 + w2 * x + z


CHAIN_CASES = {  # build(x, y, w1, w2) -> loss
    "plain": lambda x, y, w1, w2: (y + w1 * x) + w2 * y,
    "product on the left": lambda x, y, w1, w2: w2 * y + (w1 * x + y),
    "x * x, a start that is a factor": lambda x, y, w1, w2: x + x * x + w1 * x,
    "a product of two weights": lambda x, y, w1, w2: y + w1 * w2 + w2 * x,
    "an inner sum read again": _inner_sum_read_again,
    "an inner product read again": _inner_product_read_again,
    "a node between two links": _a_node_between_two_links,
}


@pytest.mark.parametrize("case", sorted(CHAIN_CASES))
@pytest.mark.parametrize("ask_inner", [False, True])
def test_fused_chain_cases(case, ask_inner):
    tape = pg.Tape()
    x, y = tape.term("x"), tape.term("y")
    w1, w2 = tape.term("w1", 0.75), tape.term("w2", -1.5)
    before = len(tape)
    loss = CHAIN_CASES[case](x, y, w1, w2)
    # Every op node, asked for as an output or a wrt term, or none of them.
    inner = [tape[i] for i in range(before, len(tape)) if not tape[i].is_leaf][:-1] if ask_inner else []
    data = np.array([[1.0, 2.0], [-0.0, 0.0], [np.inf, 1.0], [3.0, -0.0], [0.5, -2.0]] * 7)
    wrt = [w1, w2, x] + inner
    outputs = [loss] + inner
    assert same_bits(tape.eval_batch(outputs, [x, y], data, threads=1), scalar_eval(outputs, [x, y], data))
    with np.errstate(all="ignore"):
        want_loss, want_grads = scalar_grad(loss, [x, y], data, wrt)
    total, grads = tape.grad_batch(loss, [x, y], data, wrt, threads=1)
    assert same_bits([total], [want_loss]) and same_bits(grads, want_grads)
