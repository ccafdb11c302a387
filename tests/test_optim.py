"""pyrograd.optim: SGD, Adam, RMSprop, Adagrad against torch.optim, and run().

- Each optimizer follows torch.optim (float64, foreach=False) to 1e-12 over
  20 steps, for every hyperparameter variant and a callable learning rate.
- optimizer.run(...) gives exactly (==) what the Python loop of grad_batch
  and step gives, with the same threads.
- rustograd's curve fit lands where rustograd's does.
- Bad hyperparameters and bad run() input raise and write nothing.
"""
import math

import numpy as np
import pytest

import pyrograd as pg
from pyrograd.__main__ import gaussian_model

START = (0.5, -1.2, 2.0)
STEPS = 20


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# ---- a small nonlinear loss, in pyrograd and in torch ----------------------------------

def pg_problem(start=START):
    tape = pg.Tape()
    a, b, c = (tape.term(name, v) for name, v in zip("abc", start))
    loss = (a * b - 1.0) ** 2 + 3.0 * (c - 0.5) ** 2 + pg.sin(a) * c + pg.exp(0.1 * b) + 0.25 * a * a
    return tape, [a, b, c], loss


def torch_loss(torch, p):
    a, b, c = p[0], p[1], p[2]
    return (a * b - 1.0) ** 2 + 3.0 * (c - 0.5) ** 2 + torch.sin(a) * c + torch.exp(0.1 * b) + 0.25 * a * a


# (pyrograd class, torch class name, kwargs)
VARIANTS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("SGD", dict(lr=0.03, momentum=0.5, nesterov=True, weight_decay=0.2)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.1)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.9), eps=1e-6)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, betas=(0.0, 0.5))),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.02, alpha=0.9, eps=1e-6)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, weight_decay=0.1)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1, eps=1e-6)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05)),
]
VARIANT_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for name, kw in VARIANTS]


def torch_trajectory(torch, name, kwargs, steps=STEPS, lr=None):
    """Parameters after each of `steps` torch.optim steps; lr: a callable of k, set each step."""
    p = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    kwargs = dict(kwargs)
    if lr is not None:
        kwargs["lr"] = lr(0)
    opt = getattr(torch.optim, name)([p], foreach=False, **kwargs)
    out = []
    for k in range(steps):
        if lr is not None:
            opt.param_groups[0]["lr"] = lr(k)
        opt.zero_grad()
        torch_loss(torch, p).backward()
        opt.step()
        out.append(p.detach().numpy().copy())
    return np.array(out)


def pg_trajectory(name, kwargs, steps=STEPS, lr=None):
    tape, params, loss = pg_problem()
    kwargs = dict(kwargs)
    if lr is not None:
        kwargs["lr"] = lr
    opt = getattr(pg.optim, name)(params, **kwargs)
    out = []
    for _ in range(steps):
        loss.backprop()
        opt.step()
        out.append(tape.values(params))
    assert opt.steps == steps
    return np.array(out)


def assert_trajectories_close(got, want):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_matches_torch(torch, name, kwargs):
    want = torch_trajectory(torch, name, kwargs)
    got = pg_trajectory(name, kwargs)
    assert_trajectories_close(got, want)
    # the parameters really moved, so the comparison means something
    assert np.all(np.abs(got[-1] - np.array(START)) > 1e-3)


def _decay(k):
    return 0.08 / (1.0 + 0.3 * k)


@pytest.mark.parametrize("name, kwargs", [v for v in VARIANTS if "lr" in v[1]],
                         ids=[i for v, i in zip(VARIANTS, VARIANT_IDS) if "lr" in v[1]])
def test_callable_lr_matches_torch(torch, name, kwargs):
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    want = torch_trajectory(torch, name, kwargs, lr=_decay)
    got = pg_trajectory(name, kwargs, lr=_decay)
    assert_trajectories_close(got, want)
    # and a constant lr gives something else
    assert not np.allclose(pg_trajectory(name, dict(kwargs, lr=0.08)), got, rtol=1e-6)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_callable_lr_matches_torch_lambdalr(torch, name):
    """torch's LambdaLR with base lr 1.0 multiplies by exactly 1.0."""
    p = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, name)([p], lr=1.0, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _decay)
    want = []
    for _ in range(STEPS):
        opt.zero_grad()
        torch_loss(torch, p).backward()
        opt.step()
        sched.step()
        want.append(p.detach().numpy().copy())
    assert_trajectories_close(pg_trajectory(name, {}, lr=_decay), np.array(want))


def test_lr_callable_gets_the_step_count():
    seen = []

    def lr(k):
        seen.append(k)
        return 0.01

    tape, params, loss = pg_problem()
    opt = pg.optim.SGD(params, lr)
    for _ in range(3):
        loss.backprop()
        opt.step()
    assert seen == [0, 1, 2] and opt.steps == 3


def test_grad_batch_then_step_matches_torch_on_data(torch):
    """Gradients from grad_batch (sum and mean) drive the step, as backprop's do."""
    xs = np.arange(-40, 40) / 10
    ys = 0.75 * np.exp(-((xs - 1.2) ** 2) / 0.35)
    data = np.ascontiguousarray(np.stack([xs, ys], 1))
    X, Y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
    for name, kwargs, reduction in [("SGD", dict(lr=0.005, momentum=0.9), "sum"),
                                    ("Adam", dict(lr=0.05), "mean"),
                                    ("RMSprop", dict(lr=0.01), "sum"),
                                    ("Adagrad", dict(lr=0.2), "mean")]:
        tape, x, y, params, loss = gaussian_model()
        opt = getattr(pg.optim, name)(params, **kwargs)
        p = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
        topt = getattr(torch.optim, name)([p], foreach=False, **kwargs)
        for _ in range(STEPS):
            L, g = tape.grad_batch(loss, [x, y], data, params, reduction=reduction, threads=1)
            topt.zero_grad()
            mu, sigma, s = p[0], p[1], p[2]
            r = (s * torch.exp(-((X - mu) * (X - mu)) / sigma / sigma) - Y) ** 2
            tl = r.sum() if reduction == "sum" else r.mean()
            tl.backward()
            assert L == pytest.approx(tl.item(), rel=1e-12)
            np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-10, atol=1e-13)
            opt.step()
            topt.step()
            np.testing.assert_allclose(tape.values(params), p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_zero_grad():
    tape, params, loss = pg_problem()
    other = tape.term("other", 1.0)
    (loss * other).backprop()
    assert np.all(tape.grads(params) != 0)
    opt = pg.optim.SGD(params, lr=0.1)
    opt.zero_grad()
    assert np.array_equal(tape.grads(params), np.zeros(3))
    assert other.grad != 0.0  # only the parameters' grads
    opt.step()  # a step with zero grads moves nothing
    assert np.array_equal(tape.values(params), np.array(START))


def test_step_reads_the_grads_it_is_given():
    """A step after backprop uses exactly the parameters' .grad."""
    tape, params, loss = pg_problem()
    loss.backprop()
    g = tape.grads(params)
    pg.optim.SGD(params, lr=0.25).step()
    assert np.array_equal(tape.values(params), np.array(START) - 0.25 * g)
    assert loss.value == pg_problem(tuple(np.array(START) - 0.25 * g))[2].value


# ---- run() equals the Python loop ---------------------------------------------------------

def mlp_problem():
    tape = pg.Tape()
    x1, x2, t = tape.term("x1"), tape.term("x2"), tape.term("t")
    rng = np.random.default_rng(3)
    w = [tape.term(f"w{i}", float(rng.normal())) for i in range(9)]
    h0 = pg.tanh(w[0] * x1 + w[1] * x2 + w[2])
    h1 = pg.sigmoid(w[3] * x1 - w[4] * x2)
    out = w[5] * h0 + w[6] * pg.maximum(h1, 0.3) + w[7] * pg.relu(x1 - w[8])
    diff = out - t
    loss = diff * diff
    data = rng.normal(size=(101, 3))  # not a multiple of 16
    return tape, [x1, x2, t], w, loss, data


def gaussian_problem():
    tape, x, y, params, loss = gaussian_model()
    xs = np.arange(-40, 40) / 10
    data = np.ascontiguousarray(np.stack([xs, 0.75 * np.exp(-((xs - 1.2) ** 2) / 0.35)], 1))
    return tape, [x, y], list(params), loss, data


PROBLEMS = {"mlp": mlp_problem, "gaussian": gaussian_problem}

RUN_VARIANTS = [
    ("SGD", dict(lr=0.003)),
    ("SGD", dict(lr=0.002, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.02, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.005, momentum=0.5)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01)),
    ("SGD", dict(lr=lambda k: 0.004 / (1 + k))),
    ("Adam", dict(lr=lambda k: 0.03 * 0.9 ** k)),
]


def python_loop(opt, tape, loss, inputs, data, epochs, reduction, threads):
    losses = []
    for _ in range(epochs):
        L, _ = tape.grad_batch(loss, inputs, data, opt.params, reduction, threads)
        opt.step()
        losses.append(L)
    return np.array(losses)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("variant", range(len(RUN_VARIANTS)))
def test_run_equals_python_loop(problem, variant, reduction, threads):
    name, kwargs = RUN_VARIANTS[variant]
    epochs = 25
    results = []
    for use_run in (True, False):
        tape, inputs, params, loss, data = PROBLEMS[problem]()
        opt = getattr(pg.optim, name)(params, **kwargs)
        if use_run:
            losses = opt.run(loss, inputs, data, epochs, reduction=reduction, threads=threads)
        else:
            losses = python_loop(opt, tape, loss, inputs, data, epochs, reduction, threads)
        assert opt.steps == epochs
        values, grads = tape.values(params), tape.grads(params)
        # the optimizer state carries on identically: five more steps
        more = python_loop(opt, tape, loss, inputs, data, 5, reduction, threads)
        results.append((losses, values, grads, more, tape.values(params), [t.value for t in inputs]))
    (l1, v1, g1, m1, e1, i1), (l2, v2, g2, m2, e2, i2) = results
    assert l1.shape == (epochs,) and l1.dtype == np.float64
    assert np.array_equal(l1, l2)
    assert np.array_equal(v1, v2)
    assert np.array_equal(g1, g2)
    assert np.array_equal(m1, m2)
    assert np.array_equal(e1, e2)
    assert i1 == i2 == [0.0] * len(i1)  # the input leaves keep their values
    assert l1[-1] < l1[0]  # it trained


def test_run_continues_after_steps_and_runs():
    """Step count, callable lr and state carry across step() and run()."""
    lr = lambda k: 0.004 / (1 + 0.1 * k)  # noqa: E731
    out = []
    for split in (True, False):
        tape, inputs, params, loss, data = mlp_problem()
        opt = pg.optim.Adam(params, lr=lr)
        if split:
            a = python_loop(opt, tape, loss, inputs, data, 3, "sum", 1)
            b = opt.run(loss, inputs, data, 4, threads=1)
            c = opt.run(loss, inputs, data, 0, threads=1)
            d = opt.run(loss, inputs, data, 5, threads=1)
            losses = np.concatenate([a, b, c, d])
        else:
            losses = python_loop(opt, tape, loss, inputs, data, 12, "sum", 1)
        assert opt.steps == 12
        out.append((losses, tape.values(params)))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


def test_run_is_deterministic_with_threads():
    runs = []
    for _ in range(3):
        tape, inputs, params, loss, data = mlp_problem()
        losses = pg.optim.SGD(params, lr=0.002, momentum=0.9).run(loss, inputs, data, 30, threads=2)
        runs.append((losses, tape.values(params)))
    for losses, values in runs[1:]:
        assert np.array_equal(losses, runs[0][0]) and np.array_equal(values, runs[0][1])
    # and agrees with one thread to rounding
    tape, inputs, params, loss, data = mlp_problem()
    one = pg.optim.SGD(params, lr=0.002, momentum=0.9).run(loss, inputs, data, 30, threads=1)
    np.testing.assert_allclose(runs[0][0], one, rtol=1e-10)


def test_run_zero_epochs():
    tape, inputs, params, loss, data = mlp_problem()
    before = tape.values(params)
    opt = pg.optim.SGD(params, lr=0.1)
    losses = opt.run(loss, inputs, data, 0)
    assert losses.shape == (0,) and opt.steps == 0
    assert np.array_equal(tape.values(params), before)


# ---- rustograd's curve fit -------------------------------------------------------------

CURVE_FIT = (1.2000, 0.59576, 0.74520)  # mu, sigma, s as rustograd prints them


def _check_fit(values):
    mu, sigma, s = values
    assert abs(mu - CURVE_FIT[0]) < 5e-5
    assert abs(sigma - CURVE_FIT[1]) < 5e-6
    assert abs(s - CURVE_FIT[2]) < 5e-6


@pytest.mark.parametrize("threads", [1, 2, None])
def test_curve_fit(threads):
    tape, inputs, params, loss, data = gaussian_problem()
    assert data.shape == (80, 2) and data[0, 0] == -4.0 and data[-1, 0] == 3.9
    assert [p.value for p in params] == [0.0, 1.0, 1.0]
    opt = pg.optim.SGD(params, lr=0.01)
    losses = opt.run(loss, inputs, data, 100, reduction="sum", threads=threads)
    _check_fit(tape.values(params))
    assert losses[0] > 10 * losses[-1]
    assert np.all(np.diff(losses[-50:]) < 0)

    tape2, inputs2, params2, loss2, data2 = gaussian_problem()
    opt2 = pg.optim.SGD(params2, lr=0.01)
    loop = python_loop(opt2, tape2, loss2, inputs2, data2, 100, "sum", threads)
    _check_fit(tape2.values(params2))
    assert np.array_equal(loop, losses) and np.array_equal(tape2.values(params2), tape.values(params))


def test_curve_fit_scalar_loop_agrees():
    """rustograd's own loop: per sample, backprop and subtract 0.01 * grad from a
    running copy of the parameters (the epoch's gradients at its start)."""
    tape, (x, y), params, loss, data = gaussian_problem()
    current = [p.value for p in params]
    for _ in range(100):
        tape.set_values(params, np.array(current))
        step = list(current)
        for xs, ys in data:
            x.set(float(xs))
            y.set(float(ys))
            loss.backprop()
            for k, p in enumerate(params):
                step[k] -= 0.01 * p.grad
        current = step
    _check_fit(current)
    tape2, inputs2, params2, loss2, data2 = gaussian_problem()
    pg.optim.SGD(params2, lr=0.01).run(loss2, inputs2, data2, 100, threads=1)
    np.testing.assert_allclose(tape2.values(params2), current, rtol=1e-9)


# ---- bad hyperparameters ---------------------------------------------------------------

BAD_HYPER = [
    ("SGD", dict(lr=-0.1), ValueError),
    ("SGD", dict(lr=float("nan")), ValueError),
    ("SGD", dict(lr="0.1"), TypeError),
    ("SGD", dict(lr=0.1, momentum=-0.5), ValueError),
    ("SGD", dict(lr=0.1, nesterov=True), ValueError),
    ("SGD", dict(lr=0.1, nesterov=True, momentum=0.0), ValueError),
    ("SGD", dict(lr=0.1, weight_decay=-1.0), ValueError),
    ("Adam", dict(lr=-1e-3), ValueError),
    ("Adam", dict(betas=(1.0, 0.999)), ValueError),
    ("Adam", dict(betas=(0.9, 1.0)), ValueError),
    ("Adam", dict(betas=(-0.1, 0.999)), ValueError),
    ("Adam", dict(betas=(0.9, 1.5)), ValueError),
    ("Adam", dict(eps=-1e-8), ValueError),
    ("Adam", dict(weight_decay=-0.1), ValueError),
    ("RMSprop", dict(lr=-0.01), ValueError),
    ("RMSprop", dict(alpha=-0.5), ValueError),
    ("RMSprop", dict(eps=-1.0), ValueError),
    ("RMSprop", dict(momentum=-0.1), ValueError),
    ("RMSprop", dict(weight_decay=-0.1), ValueError),
    ("Adagrad", dict(lr=-0.01), ValueError),
    ("Adagrad", dict(lr_decay=-0.1), ValueError),
    ("Adagrad", dict(weight_decay=-0.1), ValueError),
    ("Adagrad", dict(eps=-1e-10), ValueError),
]


@pytest.mark.parametrize("name, kwargs, error", BAD_HYPER,
                         ids=[f"{n}-{kw}" for n, kw, _ in BAD_HYPER])
def test_bad_hyperparameters(name, kwargs, error):
    tape, params, loss = pg_problem()
    loss.backprop()
    before = tape.values(params), tape.grads(params)
    with pytest.raises(error) as excinfo:
        getattr(pg.optim, name)(params, **kwargs)
    assert str(excinfo.value)
    assert np.array_equal(tape.values(params), before[0]) and np.array_equal(tape.grads(params), before[1])


def test_torch_agrees_these_are_bad(torch):
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    for name, kwargs, _ in BAD_HYPER:
        if any(isinstance(v, str) or (isinstance(v, float) and math.isnan(v)) for v in kwargs.values()):
            continue
        with pytest.raises(ValueError):
            getattr(torch.optim, name)([p], **({"lr": 0.1} if name == "SGD" and "lr" not in kwargs else {}),
                                       **kwargs)


@pytest.mark.parametrize("params_of", ["empty", "float", "non-leaf", "two tapes"])
def test_bad_params(params_of):
    tape, params, loss = pg_problem()
    other = pg.Tape().term("o", 1.0)
    bad = {"empty": [], "float": params + [1.0], "non-leaf": params + [loss], "two tapes": params + [other]}
    error = {"empty": ValueError, "float": TypeError, "non-leaf": (ValueError, pg.NotALeafError),
             "two tapes": pg.TapeMismatchError}
    with pytest.raises(error[params_of]):
        pg.optim.Adam(bad[params_of])


@pytest.mark.parametrize("bad_lr, error", [(-0.1, ValueError), (float("nan"), ValueError), ("x", TypeError)])
def test_callable_lr_returning_bad_values(bad_lr, error):
    tape, params, loss = pg_problem()
    opt = pg.optim.Adam(params, lr=lambda k: 0.1 if k < 2 else bad_lr)
    for _ in range(2):
        loss.backprop()
        opt.step()
    loss.backprop()
    before = tape.values(params), tape.grads(params)
    with pytest.raises(error):
        opt.step()
    assert opt.steps == 2
    assert np.array_equal(tape.values(params), before[0]) and np.array_equal(tape.grads(params), before[1])


# ---- bad run() input: a clear exception, nothing written -----------------------------------

def _run_cases():
    other = pg.Tape()
    alien = other.term("alien", 1.0)
    alien_loss = alien * alien
    good = lambda d: d  # noqa: E731
    return {
        "float32": (lambda m: dict(data=m["data"].astype(np.float32)), TypeError),
        "int data": (lambda m: dict(data=np.ones(m["data"].shape, dtype=np.int64)), TypeError),
        "wrong columns": (lambda m: dict(data=np.ascontiguousarray(m["data"][:, :2])), ValueError),
        "one-dimensional": (lambda m: dict(data=m["data"][:, 0].copy()), ValueError),
        "transposed": (lambda m: dict(data=np.ascontiguousarray(m["data"].T).T), ValueError),
        "strided": (lambda m: dict(data=np.repeat(m["data"], 2, 0)[::2]), ValueError),
        "input of another tape": (lambda m: dict(inputs=m["inputs"][:2] + [alien]), pg.TapeMismatchError),
        "loss of another tape": (lambda m: dict(loss=alien_loss), pg.TapeMismatchError),
        "non-leaf input": (lambda m: dict(inputs=m["inputs"][:2] + [m["loss"]]), pg.NotALeafError),
        "non-Term input": (lambda m: dict(inputs=m["inputs"][:2] + [0.5]), TypeError),
        "reduction max": (lambda m: dict(reduction="max"), ValueError),
        "threads 0": (lambda m: dict(threads=0), ValueError),
        "epochs -1": (lambda m: dict(epochs=-1), ValueError),
        "epochs 2.0": (lambda m: dict(epochs=2.0), ValueError),
        "mean of no rows": (lambda m: dict(data=np.empty((0, 3)), reduction="mean"), (ValueError, pg.PyrogradError)),
        "lr callable goes negative": (lambda m: dict(lr=lambda k: 0.01 if k < 3 else -0.01), ValueError),
        "good": (good, None),
    }


@pytest.mark.parametrize("case", sorted(_run_cases()))
def test_run_bad_input(case):
    make, error = _run_cases()[case]
    tape, inputs, params, loss, data = mlp_problem()
    inputs[0].set(0.25)
    loss.backprop()
    m = dict(tape=tape, inputs=inputs, params=params, loss=loss, data=data)
    overrides = make(m) if case != "good" else {}
    lr = overrides.pop("lr", 0.002)
    opt = pg.optim.Adam(params, lr=lr)
    args = dict(loss=loss, inputs=inputs, data=data, epochs=5, reduction="sum", threads=1)
    args.update(overrides)
    nodes = [tape._term(i) for i in range(len(tape))]
    before = tape.values(nodes), tape.grads(nodes)
    if error is None:
        opt.run(**args)
        assert not np.array_equal(tape.values(params), before[0][[p.index for p in params]])
        return
    with pytest.raises(error) as excinfo:
        opt.run(**args)
    assert str(excinfo.value)
    assert opt.steps == 0
    assert np.array_equal(tape.values(nodes), before[0]) and np.array_equal(tape.grads(nodes), before[1])
    # the optimizer still works, from an untouched state
    good = opt.run(loss, inputs, data, 3, threads=1) if not callable(lr) else None
    if good is not None:
        tape2, inputs2, params2, loss2, data2 = mlp_problem()
        inputs2[0].set(0.25)
        want = pg.optim.Adam(params2, lr=0.002).run(loss2, inputs2, data2, 3, threads=1)
        assert np.array_equal(good, want) and np.array_equal(tape.values(params), tape2.values(params2))


# ---- user functions that raise inside run() ---------------------------------------------

class Boom(Exception):
    pass


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fails", ["f", "df"])
def test_run_with_a_raising_apply(threads, fails):
    error = Boom("bad row")

    def f(v):
        if fails == "f" and v > 100:
            raise error
        return math.sin(v)

    def df(v):
        if fails == "df" and v > 100:
            raise error
        return math.cos(v)

    tape = pg.Tape()
    w = tape.term("w", 1.0)
    x, y = tape.term("x"), tape.term("y")
    diff = pg.apply(x * w, "s", f, df) - y
    loss = diff * diff
    data = np.stack([np.linspace(0, 101, 40), np.zeros(40)], 1)  # the last row fails
    loss.backprop()
    opt = pg.optim.SGD([w], lr=0.001, momentum=0.9)
    before = tape.values([w, x, y, loss]), tape.grads([w, x, y, loss])
    with pytest.raises(Boom) as excinfo:
        opt.run(loss, [x, y], data, 5, threads=threads)
    assert excinfo.value is error
    assert opt.steps == 0
    assert np.array_equal(tape.values([w, x, y, loss]), before[0])
    assert np.array_equal(tape.grads([w, x, y, loss]), before[1])
    # the tape and the optimizer still work
    good = np.ascontiguousarray(data[:-1])
    losses = opt.run(loss, [x, y], good, 5, threads=threads)
    tape2 = pg.Tape()
    w2 = tape2.term("w", 1.0)
    x2, y2 = tape2.term("x"), tape2.term("y")
    d2 = pg.apply(x2 * w2, "s", math.sin, math.cos) - y2
    opt2 = pg.optim.SGD([w2], lr=0.001, momentum=0.9)
    want = python_loop(opt2, tape2, d2 * d2, [x2, y2], good, 5, "sum", threads)
    assert np.array_equal(losses, want) and w.value == w2.value


@pytest.mark.parametrize("threads", [1, 2])
def test_run_failing_mid_way_stops_where_the_python_loop_stops(threads):
    """The function fails once the parameter has moved far enough: run() raises
    at the same epoch as the Python loop, with the same steps taken."""
    def build():
        error = Boom("too far")

        def f(v):
            if v > 1.5:
                raise error
            return v

        tape = pg.Tape()
        w = tape.term("w", 1.0)
        x = tape.term("x")
        loss = -pg.apply(x * w, "lin", f, lambda v: 1.0)
        opt = pg.optim.SGD([w], lr=0.1, momentum=0.5)
        return tape, w, x, loss, opt, error

    data = np.ones((20, 1))
    tape, w, x, loss, opt, error = build()
    with pytest.raises(Boom) as excinfo:
        opt.run(loss, [x], data, 10, threads=threads)
    assert excinfo.value is error
    tape2, w2, x2, loss2, opt2, error2 = build()
    with pytest.raises(Boom) as excinfo:
        python_loop(opt2, tape2, loss2, [x2], data, 10, "sum", threads)
    assert excinfo.value is error2
    assert opt2.steps > 0
    assert opt.steps == opt2.steps
    assert w.value == w2.value


def test_parameters_cannot_drift_from_what_c_reads():
    # C reads the parameters through the index array made with the optimizer:
    # a params list that grew afterwards made zero_grad and the Trainer's
    # mini-batch step read past it (ASan: heap-buffer-overflow) and zero
    # another node's grad.
    tape = pg.Tape()
    a, b = tape.term("a", 1.0), tape.term("b", 2.0)
    opt = pg.optim.SGD([a], lr=0.1)
    assert opt.params == (a,)
    with pytest.raises(AttributeError):
        opt.params.append(b)
    with pytest.raises(AttributeError):
        opt.params = [a, b]
    tape.set_grads([a, b], np.array([5.0, 7.0]))
    opt.zero_grad()
    assert tape.grads([a, b]).tolist() == [0.0, 7.0]
