"""The benchmark workloads, written once for compare.py and test_bench_core.py.

Every function that needs an optional package (pyrograd, casadi, torch, cffi)
imports it inside, so importing this module needs numpy only and a missing
peer shows up where it is used.
"""

import itertools
import operator
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


# --- node build --------------------------------------------------------------

def chain(x, y, n_ops):
    """`z = z * x + y`, n_ops // 2 times: n_ops operators, each building one node.

    Works for any value type with operators (pyrograd Term, micrograd Value).
    With |x| < 1 the values converge, so a long chain stays finite.
    """
    z = x
    for _ in range(n_ops // 2):
        z = z * x + y
    return z


def pyrograd_chain(n_ops):
    """(x, z) of chain(x, y, n_ops) on a new pyrograd tape."""
    import pyrograd as pg
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    return x, chain(x, tape.term("y", 1.0), n_ops)


def micrograd_chain(n_ops):
    from micrograd.engine import Value
    return chain(Value(0.5), Value(1.0), n_ops)


# --- random graph ------------------------------------------------------------

ADD, SUB, MUL, TANH, SIN = range(5)
# 80% add/sub/mul, 20% tanh/sin, tuned so that on 1M nodes every node's
# derivative stays near 1: with more add/sub they grow exponentially with depth
# (1e184 at 55%) and amplify rounding until no two implementations agree; with
# more mul they fade, and the output would depend on early nodes in name only.
OP_MIX = (0.22, 0.22, 0.36, 0.10, 0.10)


@dataclass(frozen=True)
class RandomGraph:
    """An op list: node n_leaves + k computes op[k] on nodes a[k] and b[k].

    Nodes 0..n_leaves-1 are leaves with leaf_values. b is -1 for unary ops.
    The output is the last node.
    """
    leaf_values: np.ndarray
    op: np.ndarray
    a: np.ndarray
    b: np.ndarray

    @property
    def n_leaves(self):
        return self.leaf_values.size

    @property
    def n_nodes(self):
        return self.n_leaves + self.op.size


def random_graph(n_nodes, seed=0, n_leaves=8, block=32, recent=12, far=0.1, leaf=0.02):
    """A deep random graph of about n_nodes nodes that all feed the output.

    Nodes come in blocks of `block`; each node is the first operand (a) of
    exactly one node of the next block, so nothing is dead (CasADi would drop
    dead nodes from its function, the tape would still sweep them) and a lies
    1..2*block-1 nodes back. The second operand (b) of add/sub/mul is a tanh/sin
    output or a leaf (|b| <= 1): one of the last `recent` of them (about the
    last 64 nodes), a fraction `far` of the time any earlier one, a fraction
    `leaf` of the time a leaf, as parameters are used all through a model (so
    the leaves' gradients do not fade with depth). That shares subexpressions
    near and far and keeps values finite: add grows |a| by at most 1, mul does
    not grow it, tanh/sin bring it back under 1. The output sums the last block.
    """
    rng = np.random.default_rng(seed)
    n_body = max(n_nodes // block, 2) * block
    index = np.arange(n_leaves, n_body)
    op = rng.choice(len(OP_MIX), size=index.size, p=OP_MIX)

    perm = rng.permuted(np.tile(np.arange(block), (n_body // block, 1)), axis=1).ravel()
    a = index - index % block - block + perm[index]
    first = index < block  # the first block has no block before it
    a[first] = rng.integers(0, index[first])

    bounded = np.concatenate([np.arange(n_leaves), index[op >= TANH]])
    count = np.searchsorted(bounded, index)  # bounded nodes before each node
    pos = count - 1 - rng.integers(0, recent, index.size) % count
    anywhere = rng.random(index.size) < far
    pos[anywhere] = rng.integers(0, count[anywhere])
    use_leaf = rng.random(index.size) < leaf
    pos[use_leaf] = rng.integers(0, n_leaves, np.count_nonzero(use_leaf))
    clash = bounded[pos] == a  # CasADi would simplify x - x to 0
    pos[clash] = np.where(pos[clash] > 0, pos[clash] - 1, pos[clash] + 1)
    b = np.where(op >= TANH, -1, bounded[pos])

    last = np.arange(n_body - block, n_body)
    sums = np.arange(n_body, n_body + block - 2)
    return RandomGraph(
        leaf_values=rng.uniform(-1.0, 1.0, n_leaves),
        op=np.concatenate([op, np.full(block - 1, ADD)]),
        a=np.concatenate([a, last[:1], sums]),
        b=np.concatenate([b, last[1:]]),
    )


def build_graph(graph, leaves, tanh, sin):
    """Build graph's nodes from leaves with operators and tanh/sin; return the output."""
    ops = [operator.add, operator.sub, operator.mul,
           lambda x, _: tanh(x), lambda x, _: sin(x)]
    nodes = list(leaves)
    for op, a, b in zip(graph.op.tolist(), graph.a.tolist(), graph.b.tolist()):
        nodes.append(ops[op](nodes[a], nodes[b]))
    return nodes[-1]


def pyrograd_graph(graph):
    """(tape, leaves, output) of graph on a pyrograd tape."""
    import pyrograd as pg
    tape = pg.Tape()
    leaves = [tape.term(f"x{i}", v) for i, v in enumerate(graph.leaf_values.tolist())]
    return tape, leaves, build_graph(graph, leaves, pg.tanh, pg.sin)


def casadi_graph(graph):
    """A CasADi SX Function x -> (output, d output / dx) of graph."""
    import casadi
    x = casadi.SX.sym("x", graph.n_leaves)
    y = build_graph(graph, casadi.vertsplit(x), casadi.tanh, casadi.sin)
    return casadi.Function("f", [x], [y, casadi.gradient(y, x)])


def pyrograd_sweep(leaf, y):
    """A callable: set leaf, then y.backprop(), which evaluates everything after it.

    The leaf alternates between two values, so no sweep can be skipped as unchanged.
    """
    moves = itertools.cycle([leaf.value, leaf.value + 1e-6])

    def sweep():
        leaf.set(next(moves))
        y.backprop()
    return sweep


def casadi_sweep(f, graph):
    """A callable: f at the leaf values, leaf 0 alternating as in pyrograd_sweep."""
    nudged = graph.leaf_values.copy()
    nudged[0] += 1e-6
    moves = itertools.cycle([graph.leaf_values, nudged])
    return lambda: f(next(moves))


def relative_error(actual, expected):
    """max |actual - expected| relative to the largest |expected|."""
    expected = np.atleast_1d(np.asarray(expected, dtype=float))
    actual = np.atleast_1d(np.asarray(actual, dtype=float))
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# --- grad_batch over many rows --------------------------------------------------

def pyrograd_batch_model(n_nodes=320, n_inputs=4, n_rows=100_000, seed=0):
    """(loss, inputs, params, data): a random graph of a few hundred nodes as a model.

    Its first n_inputs leaves are fed a row of data each, the others are parameters.
    """
    graph = random_graph(n_nodes, seed=seed)
    _, leaves, loss = pyrograd_graph(graph)
    data = np.random.default_rng(seed).uniform(-1.0, 1.0, (n_rows, n_inputs))
    return loss, leaves[:n_inputs], leaves[n_inputs:], data


# --- unary ops: apply() with native pointers vs a built-in -------------------

def pyrograd_sin_chain(n_nodes, sin):
    """(x, y): y = sin(sin(...sin(x))), n_nodes deep, on a new pyrograd tape."""
    import pyrograd as pg
    x = pg.Tape().term("x", 1.0)
    y = x
    for _ in range(n_nodes):
        y = sin(y)
    return x, y


def libm_sin():
    """sin as a custom op whose f and df are libm's sin and cos: native
    `double (*)(double)` pointers (cffi ABI mode), so no sweep enters Python."""
    import cffi
    ffi = cffi.FFI()
    ffi.cdef("double sin(double); double cos(double);")
    libm = ffi.dlopen(None)  # the interpreter already links libm
    sin, cos = libm.sin, libm.cos
    return lambda x: x.apply("libm_sin", sin, cos)


# --- rustograd's curve fit -----------------------------------------------------
# Fit s*exp(-(x-mu)^2/sigma^2) to 0.75*exp(-(x-1.2)^2/0.35) at 80 samples, from
# mu=0, sigma=1, s=1: each epoch steps by -LR * the gradient, summed over the
# samples, of the squared error at the epoch's starting parameters.

CURVE_X = -4.0 + 0.1 * np.arange(80)
CURVE_T = 0.75 * np.exp(-(CURVE_X - 1.2) ** 2 / 0.35)
CURVE_START = (0.0, 1.0, 1.0)  # mu, sigma, s
CURVE_EPOCHS = 100
CURVE_LR = 0.01
CURVE_EXPECTED = (1.2000, 0.59576, 0.74520)  # from the seeds README, rounded
CURVE_TOLERANCE = (0.5e-4, 0.5e-5, 0.5e-5)   # half a unit of the last digit


def curve_fit_ok(params):
    return all(abs(p - e) <= tol
               for p, e, tol in zip(params, CURVE_EXPECTED, CURVE_TOLERANCE))


def curve_fit_tape():
    """(loss, [x, t], [mu, sigma, s]): rustograd's squared error of one sample, on a new tape."""
    import pyrograd as pg
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    t = tape.term("t", 0.0)
    params = [tape.term(name, v) for name, v in zip(("mu", "sigma", "s"), CURVE_START)]
    mu, sigma, s = params
    x_mu = x - mu
    diff = s * pg.exp(-(x_mu * x_mu) / sigma / sigma) - t
    return diff * diff, [x, t], params


def curve_fit_pyrograd_loop():
    """One fit with a Python loop over samples: set, backprop, read the grads
    into running copies of the parameters, which the next epoch sets."""
    loss, (x, t), params = curve_fit_tape()
    samples = list(zip(CURVE_X.tolist(), CURVE_T.tolist()))
    values = list(CURVE_START)
    for _ in range(CURVE_EPOCHS):
        for p, v in zip(params, values):
            p.set(v)
        for xi, ti in samples:
            x.set(xi)
            t.set(ti)
            loss.backprop()
            values = [v - CURVE_LR * p.grad for p, v in zip(params, values)]
    return values


def curve_fit_pyrograd_epochs():
    """One fit with a Python loop over epochs: grad_batch over all samples, then an SGD step."""
    import pyrograd as pg
    loss, inputs, params = curve_fit_tape()
    data = np.column_stack([CURVE_X, CURVE_T])
    sgd = pg.optim.SGD(params, lr=CURVE_LR)
    for _ in range(CURVE_EPOCHS):
        loss.tape.grad_batch(loss, inputs, data, params, reduction="sum")
        sgd.step()
    return [p.value for p in params]


def curve_fit_pyrograd_run():
    """One fit in one C call: SGD.run."""
    import pyrograd as pg
    loss, inputs, params = curve_fit_tape()
    data = np.column_stack([CURVE_X, CURVE_T])
    pg.optim.SGD(params, lr=CURVE_LR).run(loss, inputs, data, CURVE_EPOCHS, reduction="sum")
    return [p.value for p in params]


def curve_fit_numpy():
    """One fit with the gradient derived by hand, vectorized over samples."""
    x, t = CURVE_X, CURVE_T
    mu, sigma, s = CURVE_START
    for _ in range(CURVE_EPOCHS):
        d = x - mu
        g = np.exp(-d * d / (sigma * sigma))
        r = 2.0 * (s * g - t)       # d loss / d prediction
        rsg = r * s * g * 2.0 * d / (sigma * sigma)
        mu, sigma, s = (mu - CURVE_LR * rsg.sum(),
                        sigma - CURVE_LR * (rsg * d).sum() / sigma,
                        s - CURVE_LR * (r * g).sum())
    return mu, sigma, s


def curve_fit_torch():
    """One fit with PyTorch float64 tensors and autograd, vectorized over samples."""
    import torch
    x = torch.from_numpy(CURVE_X)
    t = torch.from_numpy(CURVE_T)
    params = torch.tensor(CURVE_START, dtype=torch.float64, requires_grad=True)
    for _ in range(CURVE_EPOCHS):
        mu, sigma, s = params
        loss = ((s * torch.exp(-(x - mu) ** 2 / sigma ** 2) - t) ** 2).sum()
        params.grad = None
        loss.backward()
        with torch.no_grad():
            params -= CURVE_LR * params.grad
    return params.tolist()


def build_curve_fit_c():
    """A callable doing one fit in bench/curve_fit_ref.c, built with `cc -O2`."""
    import cffi
    ffi = cffi.FFI()
    ffi.cdef("void curve_fit(const double *x, const double *t, int n,"
             " int epochs, double lr, double params[3]);")
    source = Path(__file__).with_name("curve_fit_ref.c")
    # The loaded library stays mapped after its temporary file is removed.
    with tempfile.TemporaryDirectory() as tmp:
        lib_path = Path(tmp) / "libcurve_fit_ref.so"
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(lib_path),
                        str(source), "-lm"], check=True)
        lib = ffi.dlopen(str(lib_path))

    x = ffi.from_buffer("double[]", CURVE_X)
    t = ffi.from_buffer("double[]", CURVE_T)

    def fit():
        params = ffi.new("double[3]", CURVE_START)
        lib.curve_fit(x, t, CURVE_X.size, CURVE_EPOCHS, CURVE_LR, params)
        return list(params)
    return fit


# --- moons training step -----------------------------------------------------
# micrograd's demo: 100 two-moons points, MLP 2-16-16-1 (ReLU, ReLU, linear),
# loss = mean(relu(1 - y * score)) + 1e-4 * sum(p * p), then one SGD step on
# every parameter.  Every implementation starts from the same parameters (a
# pyrograd MLP's, seed 1337) and takes the same steps at a fixed learning
# rate, so their losses can be checked against each other.

MOONS_SIZES = (2, 16, 16, 1)
MOONS_LR = 0.5
MOONS_ALPHA = 1e-4


def moons_data():
    """(X, y): examples/moons.py's 100 points, labels -1 and +1."""
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "examples" / "moons.py"
    spec = importlib.util.spec_from_file_location("moons_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_moons()


def moons_start():
    """The first parameters, as [(W, b) for each layer], W of shape (nout, nin)."""
    import pyrograd as pg
    model = pg.nn.MLP(MOONS_SIZES[0], list(MOONS_SIZES[1:]), seed=1337)
    layers = []
    for layer in model.layers:
        W = np.array([model.tape.values(n.w) for n in layer.neurons])
        b = model.tape.values([n.b for n in layer.neurons])
        layers.append((W, b))
    return layers


def moons_pyrograd(steps=1):
    """A call doing `steps` pg.nn.Trainer steps (grad_batch over the points
    with the L2 term, and an SGD step, in C); it returns the last loss."""
    import pyrograd as pg
    X, y = moons_data()
    model = pg.nn.MLP(MOONS_SIZES[0], list(MOONS_SIZES[1:]), seed=1337)
    sgd = pg.optim.SGD(model.parameters(), lr=MOONS_LR)
    trainer = pg.nn.Trainer(model, sgd, pg.losses.hinge,
                            regularization=lambda ps: MOONS_ALPHA * pg.losses.l2(ps))
    return lambda: trainer.train(X, y, epochs=steps, progress=False)[-1]


def moons_micrograd():
    """A step() of micrograd's own demo loop (without its accuracy count)."""
    from micrograd.engine import Value
    from micrograd.nn import MLP
    X, y = moons_data()
    model = MLP(MOONS_SIZES[0], list(MOONS_SIZES[1:]))
    for layer, (W, b) in zip(model.layers, moons_start()):
        for neuron, w_row, b_i in zip(layer.neurons, W, b):
            for p, v in zip(neuron.w, w_row):
                p.data = float(v)
            neuron.b.data = float(b_i)
    params = model.parameters()
    rows = [list(map(float, row)) for row in X]
    labels = [float(v) for v in y]

    def step():
        scores = [model(list(map(Value, row))) for row in rows]
        losses = [(1 + -yi * si).relu() for yi, si in zip(labels, scores)]
        loss = sum(losses) * (1.0 / len(losses)) + MOONS_ALPHA * sum(p * p for p in params)
        model.zero_grad()
        loss.backward()
        for p in params:
            p.data -= MOONS_LR * p.grad
        return loss.data
    return step


def _moons_forward(ops, X, layers):
    """Scores of the MLP for the rows of X, with ops.relu and the @ operator."""
    h = X
    for k, (W, b) in enumerate(layers):
        h = h @ W.T + b
        if k < len(layers) - 1:
            h = ops.relu(h)
    return h[:, 0]


def moons_torch():
    """A step() with PyTorch float64 tensors, eager mode, on one thread: its
    tensors are too small to share, and on a busy machine its idle worker
    threads spinning for work make a step up to a hundred times slower."""
    import torch
    torch.set_num_threads(1)
    X, y = (torch.from_numpy(a) for a in moons_data())
    params = [torch.tensor(a, requires_grad=True) for layer in moons_start() for a in layer]
    layers = list(zip(params[::2], params[1::2]))

    def step():
        scores = _moons_forward(torch, X, layers)
        loss = torch.relu(1 - y * scores).mean() + MOONS_ALPHA * sum((p * p).sum() for p in params)
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= MOONS_LR * p.grad
        return loss.item()
    return step


def moons_jax():
    """(step(), compile seconds): the step jitted by JAX, in float64."""
    import time
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    X, y = (jnp.asarray(a) for a in moons_data())

    def loss_of(layers):
        scores = _moons_forward(jax.nn, X, layers)
        penalty = sum((W * W).sum() + (b * b).sum() for W, b in layers)
        return jnp.maximum(1 - y * scores, 0).mean() + MOONS_ALPHA * penalty

    @jax.jit
    def update(layers):
        loss, grads = jax.value_and_grad(loss_of)(layers)
        return loss, jax.tree_util.tree_map(lambda p, g: p - MOONS_LR * g, layers, grads)

    state = {"layers": [(jnp.asarray(W), jnp.asarray(b)) for W, b in moons_start()]}
    start = time.perf_counter()
    jax.block_until_ready(update(state["layers"]))
    compile_seconds = time.perf_counter() - start

    def step():
        loss, state["layers"] = update(state["layers"])
        return float(loss)  # waits for the result, as every other step does
    return step, compile_seconds
