"""Neural networks on a tape: micrograd's Neuron, Layer and MLP, RustGrad's
MlpBuilder, and a Trainer that runs its epochs in C.

    model = pg.nn.MLP(2, [16, 16, 1], seed=0)      # parameters are leaves of model.tape
    score = model([0.5, -1.0])                     # appends the graph, returns a Term
    trainer = pg.nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=0.1), pg.losses.hinge)
    losses = trainer.train(X, y, epochs=100)
    trainer.predict(X)                             # one eval_batch over the rows

A module is a recipe for appending a graph: calling it on a list of Terms or
numbers appends w . x + b and the activation of every neuron, and returns the
outputs.  The Trainer calls the model once, on input leaves, and then feeds
the rows of the data through that one graph.

Every module takes `tape=` (a new tape if None), `seed=` (an int or a numpy
Generator) and `init=`: "uniform" (micrograd's U(-1, 1), biases 0; the
default), "kaiming" (RustGrad's), "glorot", or a function (rng, nin, nout)
-> (weights of shape (nout, nin), biases of shape (nout,)).
"""
import enum
import math
import sys
import time
import zipfile

import numpy as np

from . import batch, functions
from .errors import TapeMismatchError
from .tape import Tape, Term, _is_number

__all__ = ["Activation", "Module", "Neuron", "Layer", "MLP", "MlpBuilder", "Trainer", "load"]


class Activation(enum.Enum):
    """What a neuron applies to w . x + b; call it on a Term or a number."""

    LINEAR = "linear"
    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    LEAKY_RELU = "leaky_relu"
    SOFTPLUS = "softplus"

    def __call__(self, x):
        return _ACTIVATIONS[self](x)


_ACTIVATIONS = {
    Activation.LINEAR: lambda x: x,
    Activation.RELU: functions.relu,
    Activation.TANH: functions.tanh,
    Activation.SIGMOID: functions.sigmoid,
    Activation.LEAKY_RELU: lambda x: functions.maximum(x, 0.01 * x),  # PyTorch's slope
    Activation.SOFTPLUS: functions.softplus,
}


def _activation(nonlin):
    """micrograd's nonlin=True is ReLU and False linear; or any Activation."""
    if isinstance(nonlin, Activation):
        return nonlin
    if isinstance(nonlin, bool):
        return Activation.RELU if nonlin else Activation.LINEAR
    raise TypeError(f"nonlin must be True, False or a pyrograd.nn.Activation, not {nonlin!r}")


# ---- initial values: each draws (weights of shape (nout, nin), biases of shape (nout,))

def _uniform(rng, nin, nout):
    """micrograd: weights from U(-1, 1), biases 0."""
    return rng.uniform(-1.0, 1.0, (nout, nin)), np.zeros(nout)


def _kaiming(rng, nin, nout):
    """RustGrad: U(-1, 1) scaled by sqrt(2 / nin), which keeps the size of
    ReLU activations from layer to layer; biases 0.1, so that ReLUs start active."""
    return rng.uniform(-1.0, 1.0, (nout, nin)) * math.sqrt(2.0 / nin), np.full(nout, 0.1)


def _glorot(rng, nin, nout):
    """Glorot (Xavier) uniform: U(-a, a) with a = sqrt(6 / (nin + nout)), biases 0."""
    limit = math.sqrt(6.0 / (nin + nout))
    return rng.uniform(-limit, limit, (nout, nin)), np.zeros(nout)


def _zeros(rng, nin, nout):
    """For a model whose values are loaded next."""
    return np.zeros((nout, nin)), np.zeros(nout)


INITS = {"uniform": _uniform, "kaiming": _kaiming, "glorot": _glorot}


def _initial_values(init, seed, nin, nout):
    if not callable(init):
        try:
            init = INITS[init]
        except (KeyError, TypeError):
            raise ValueError(f"init must be one of {sorted(INITS)} or a callable, not {init!r}") from None
    weights, biases = init(np.random.default_rng(seed), nin, nout)
    weights, biases = np.asarray(weights, dtype=np.float64), np.asarray(biases, dtype=np.float64)
    if weights.shape != (nout, nin) or biases.shape != (nout,):
        raise ValueError(f"init gave weights of shape {weights.shape} and biases of shape {biases.shape}, "
                         f"not ({nout}, {nin}) and ({nout},)")
    return weights, biases


def _count(name, n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive int, not {n!r}")
    return int(n)


def _tape(tape):
    if tape is None:
        return Tape()  # not `tape or Tape()`: an empty tape is falsy
    if not isinstance(tape, Tape):
        raise TypeError(f"tape must be a pyrograd.Tape, not {type(tape).__name__}")
    return tape


# ---- modules ----------------------------------------------------------------------

class Module:
    """What every model has: `tape`, `nin` inputs, `nout` outputs, its
    parameters (leaves of the tape) and a call that appends its graph."""

    def parameters(self):
        return []

    def parameter_count(self):
        return len(self.parameters())

    def zero_grad(self):
        params = self.parameters()
        self.tape.set_grads(params, np.zeros(len(params)))

    def __call__(self, x):
        """The outputs for inputs x (Terms of self.tape or numbers): one Term
        for a single output, else a list."""
        out = self._forward(self._inputs(x))
        return out[0] if len(out) == 1 else out

    def _inputs(self, x):
        if type(x) is Term or _is_number(x):
            x = [x]
        x = list(x)
        if len(x) != self.nin:
            raise ValueError(f"{type(self).__name__} takes {self.nin} inputs, not {len(x)}")
        return x

    # ---- trained parameters in an .npz file, with what load needs to rebuild the model
    def save(self, path):
        sizes, activations = self._architecture()
        with open(path, "wb") as file:
            np.savez(file, kind=type(self).__name__, nin=self.nin, sizes=sizes,
                     activations=[a.value for a in activations],
                     parameters=self.tape.values(self.parameters()))


class Neuron(Module):
    """activation(w . x + b), with ReLU for nonlin=True and none for False."""

    def __init__(self, nin, nonlin=True, *, init="uniform", tape=None, seed=None):
        nin = _count("nin", nin)
        weights, biases = _initial_values(init, seed, nin, 1)
        self._setup(_tape(tape), weights[0], biases[0], _activation(nonlin))

    @classmethod
    def _with_values(cls, tape, weights, bias, activation):
        neuron = cls.__new__(cls)
        neuron._setup(tape, weights, bias, activation)
        return neuron

    def _setup(self, tape, weights, bias, activation):
        self.tape = tape
        self.w = [tape.term("w", float(wi)) for wi in weights]
        self.b = tape.term("b", float(bias))
        self.activation = activation
        self.nin, self.nout = len(self.w), 1

    def _output(self, x):
        act = self.b  # summed in micrograd's order, b + w0 x0 + w1 x1 + ...
        for wi, xi in zip(self.w, x):
            act = act + wi * xi
        return self.activation(act)

    def _forward(self, x):
        return [self._output(x)]

    def parameters(self):
        return self.w + [self.b]

    def _architecture(self):
        return [1], [self.activation]

    def __repr__(self):
        return f"Neuron({self.nin}, {self.activation.name})"


class Layer(Module):
    """nout neurons on the same inputs."""

    def __init__(self, nin, nout, nonlin=True, *, init="uniform", tape=None, seed=None):
        nin, nout = _count("nin", nin), _count("nout", nout)
        weights, biases = _initial_values(init, seed, nin, nout)
        tape, activation = _tape(tape), _activation(nonlin)
        self.tape = tape
        self.neurons = [Neuron._with_values(tape, w, b, activation) for w, b in zip(weights, biases)]
        self.activation = activation
        self.nin, self.nout = nin, nout

    def _forward(self, x):
        return [n._output(x) for n in self.neurons]

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def _architecture(self):
        return [self.nout], [self.activation]

    def __repr__(self):
        return f"Layer({self.nin}, {self.nout}, {self.activation.name})"


class MLP(Module):
    """Layers one after another.  As in micrograd, hidden layers are ReLU
    and the last one linear, unless `activations` gives one per layer."""

    def __init__(self, nin, nouts, *, activations=None, init="uniform", tape=None, seed=None):
        sizes = [_count("nin", nin)] + [_count("a layer size", n) for n in nouts]
        if len(sizes) < 2:
            raise ValueError("an MLP needs at least one layer")
        if activations is None:
            activations = [Activation.RELU] * (len(sizes) - 2) + [Activation.LINEAR]
        if len(activations) != len(sizes) - 1:
            raise ValueError(f"{len(sizes) - 1} layers need {len(sizes) - 1} activations, not {len(activations)}")
        self.tape = tape = _tape(tape)
        rng = np.random.default_rng(seed)  # one generator: each layer draws after the last
        self.layers = [Layer(sizes[i], sizes[i + 1], activation, init=init, tape=tape, seed=rng)
                       for i, activation in enumerate(activations)]
        self.nin, self.nout = sizes[0], sizes[-1]

    def _forward(self, x):
        for layer in self.layers:
            x = layer._forward(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def _architecture(self):
        return [layer.nout for layer in self.layers], [layer.activation for layer in self.layers]

    def __repr__(self):
        return f"MLP of [{', '.join(map(repr, self.layers))}]"


class MlpBuilder:
    """RustGrad's way to describe an MLP a layer at a time:

        MlpBuilder(3).add_layer(8, Activation.RELU).add_layer(1, Activation.LINEAR).build()

    Weights start as RustGrad's do (init="kaiming") unless told otherwise.
    """

    def __init__(self, nin, *, init="kaiming", tape=None, seed=None):
        self.nin = _count("nin", nin)
        self._options = {"init": init, "tape": tape, "seed": seed}
        self._sizes, self._activations = [], []

    def add_layer(self, nout, activation=Activation.RELU):
        self._sizes.append(_count("nout", nout))
        self._activations.append(_activation(activation))
        return self

    def build(self):
        return MLP(self.nin, self._sizes, activations=self._activations, **self._options)


def load(path, tape=None):
    """The model saved by `model.save(path)`, rebuilt on `tape` (a new one if
    None).  A file that does not hold such a model raises ValueError saying
    what is wrong with it, before anything is built."""
    kind, nin, sizes, activations, values = _saved_model(path)
    if kind == "Neuron":
        model = Neuron(nin, activations[0], init=_zeros, tape=tape)
    elif kind == "Layer":
        model = Layer(nin, sizes[0], activations[0], init=_zeros, tape=tape)
    else:
        model = MLP(nin, sizes, activations=activations, init=_zeros, tape=tape)
    model.tape.set_values(model.parameters(), values)
    return model


_KINDS = ("Neuron", "Layer", "MLP")


def _saved_model(path):
    """(kind, nin, sizes, activations, parameters) of the file that save wrote
    at path, each checked against the others."""
    def wrong(problem):
        return ValueError(f"{path} is not a saved pyrograd.nn model: {problem}")

    try:
        file = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise wrong("numpy cannot read it as an .npz file, the format model.save writes") from error
    if not isinstance(file, np.lib.npyio.NpzFile):
        raise wrong("it holds one array (an .npy file), not the arrays model.save writes")
    with file:
        try:
            fields = {key: file[key] for key in ("kind", "nin", "sizes", "activations", "parameters")}
        except KeyError as missing:
            raise wrong(f"it has no {missing}") from None
        except ValueError as error:  # an array of Python objects, which allow_pickle=False refuses
            raise wrong(f"it holds an array numpy cannot read without pickle ({error})") from None

    def scalar(key, kinds, what):
        array = fields[key]
        if array.shape != () or array.dtype.kind not in kinds:
            raise wrong(f"its {key} must be {what}, not an array of shape {array.shape} and dtype {array.dtype}")
        return array.item()

    def vector(key, kinds, what):
        array = fields[key]
        if array.ndim != 1 or array.dtype.kind not in kinds:
            raise wrong(f"its {key} must be a 1-D array of {what}, not an array of shape "
                        f"{array.shape} and dtype {array.dtype}")
        return array.tolist()

    kind = scalar("kind", "U", "one of " + ", ".join(_KINDS))
    if kind not in _KINDS:
        raise wrong(f"its kind is {kind!r}, not one of {', '.join(_KINDS)}")
    nin = scalar("nin", "iu", "a number of inputs (an int)")
    sizes = vector("sizes", "iu", "layer sizes (ints)")
    names = vector("activations", "U", "activation names")
    if nin < 1 or not sizes or min(sizes) < 1:
        raise wrong(f"it has {nin} inputs and layer sizes {sizes}: they must be positive, "
                    "with at least one layer")
    layers = 1 if kind in ("Neuron", "Layer") else len(sizes)
    if len(sizes) != layers or (kind == "Neuron" and sizes != [1]):
        raise wrong(f"a {kind} has {'one output' if kind == 'Neuron' else 'one layer'}, "
                    f"but its sizes are {sizes}")
    if len(names) != layers:
        raise wrong(f"its {layers} layers need {layers} activations, but it has {len(names)}: {names}")
    known = [a.value for a in Activation]
    for name in names:
        if name not in known:
            raise wrong(f"its activation {name!r} is not one of {', '.join(known)}")
    activations = [Activation(name) for name in names]

    widths = [nin] + sizes
    count = sum((n_in + 1) * n_out for n_in, n_out in zip(widths, widths[1:]))  # weights and a bias each
    values = fields["parameters"]
    if values.shape != (count,):
        article = "an" if kind == "MLP" else "a"
        raise wrong(f"its parameters must be a 1-D array of shape ({count},) for {article} {kind} with {nin} "
                    f"inputs and layer sizes {sizes}, not an array of shape {values.shape}")
    if values.dtype.kind != "f":
        raise wrong(f"its parameters must be floats, not {values.dtype}")
    return kind, nin, sizes, activations, np.ascontiguousarray(values, dtype=np.float64)


# ---- training ---------------------------------------------------------------------


class Trainer:
    """Fits a model to data with an optimizer and a loss of one sample
    (a function (prediction, target) -> Term, such as pg.losses.mse).

    The loss of one sample is built once, on input leaves that every row of
    the data is fed into; a step is one grad_batch over the rows, in C, and
    one optimizer step, so the Python cost of an epoch does not grow with the
    number of rows.

    regularization, if given, is a function of the list of parameters giving
    a Term that does not depend on the data, such as
    `lambda ps: 1e-4 * pg.losses.l2(ps)`.  A step minimizes the mean loss of
    its rows plus that term, as micrograd's moons demo does; the term and its
    gradient are computed once a step, not once a row.
    """

    def __init__(self, model, optimizer, loss, regularization=None):
        if not isinstance(model, Module):
            raise TypeError(f"model must be a pyrograd.nn.Module, not {type(model).__name__}")
        if optimizer.tape is not model.tape:
            raise TapeMismatchError("the optimizer's parameters are not on the model's tape")
        if not callable(loss):
            raise TypeError(f"loss must be a function (prediction, target) -> Term, not {loss!r}")
        self.model, self.optimizer, self.loss = model, optimizer, loss
        self._check_targets = getattr(loss, "check_targets", None)
        tape = model.tape
        self._penalty = None
        if regularization is not None:
            self._penalty = regularization(model.parameters())
            if type(self._penalty) is not Term or self._penalty.tape is not tape:
                raise TypeError("regularization must give a Term of the model's tape")
        self._inputs = [tape.term(f"x{i}") for i in range(model.nin)]
        self._outputs = model(self._inputs)
        self._sample_losses = {}  # the shape of one target -> (target leaves, loss of one sample)

    def train(self, X, y, epochs, batch_size=None, shuffle=True, seed=None, progress=True):
        """Runs `epochs` passes over the data and returns the loss of each:
        the mean over its rows, plus the regularization.

        batch_size=None takes a step per epoch on all the rows; a number takes
        a step per batch of that many, visiting the rows in a new random order
        every epoch when `shuffle` (numpy's default_rng(seed)).  The loss of
        an epoch of batches is the mean of its batches' losses, by rows.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, not {epochs!r}")
        if batch_size is not None:
            batch_size = _count("batch_size", batch_size)
        data, target_shape = self._data(X, y)
        _, sample_loss, input_indices = self._sample_loss(target_shape)
        size = len(data) if batch_size is None else min(batch_size, len(data))
        if size == len(data) and not progress:  # one C call, nothing else to do
            return self._run(sample_loss, input_indices, data, epochs, None)
        bar = _Progress(epochs, progress)
        try:
            if size == len(data):
                return self._run(sample_loss, input_indices, data, epochs, bar)
            rng = np.random.default_rng(seed)
            losses = []
            for _ in range(epochs):
                # The order of the rows only matters when they are split into batches.
                rows = data[rng.permutation(len(data))] if shuffle and size < len(data) else data
                total = 0.0
                for start in range(0, len(rows), size):
                    part = rows[start:start + size]
                    total += self._step(sample_loss, input_indices, part) * len(part)
                losses.append(total / len(rows))
                bar.update(1, losses[-1])
            return losses
        finally:
            bar.close()

    def _run(self, sample_loss, input_indices, data, epochs, bar):
        """Full-batch epochs: optimizer.run does them in C, in one call, or in
        calls of up to 0.1 s to move the progress bar.  (Its checks were done
        when the loss was built: a step of a small model is tens of
        microseconds, and they would take a fifth of it.)"""
        penalty = -1 if self._penalty is None else self._penalty.index
        threads = batch.resolve_threads(None, len(data), sample_loss.index + 1)
        in_idx, n_in = input_indices

        def run(n):
            return self.optimizer._run(sample_loss.index, penalty, in_idx, n_in, data, 1, threads, n)
        if bar is None or not bar.shown:
            return run(epochs)
        losses, chunk = [], 1
        while len(losses) < epochs:
            n = min(chunk, epochs - len(losses))
            start = time.perf_counter()
            losses.extend(run(n))
            bar.update(n, losses[-1])
            chunk = 2 * n if time.perf_counter() - start < 0.05 else n
        return losses

    def _step(self, sample_loss, input_indices, rows):
        """One optimizer step on the mean loss of `rows`, plus the regularization."""
        optimizer = self.optimizer
        penalty = -1 if self._penalty is None else self._penalty.index
        threads = batch.resolve_threads(None, len(rows), sample_loss.index + 1)
        loss, _ = batch.run_grad_batch(self.model.tape, sample_loss.index, penalty, *input_indices, rows,
                                       optimizer._indices, optimizer._c.n, 1, threads)
        optimizer.step()
        return loss

    def predict(self, X):
        """The model's outputs for every row of X, with one eval_batch:
        shape (rows,) for a model of one output, else (rows, outputs)."""
        return self.model.tape.eval_batch(self._outputs, self._inputs, self._features(X))

    def predict_single(self, x):
        """The model's output for one sample: a float, or an array for several outputs."""
        out = self.predict(np.asarray(x, dtype=np.float64).reshape(1, -1))[0]
        return float(out) if np.ndim(out) == 0 else out

    # ---- checking the data
    def _features(self, X):
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.model.nin:
            raise ValueError(f"X must have shape (rows, {self.model.nin}): the model takes "
                             f"{self.model.nin} features, and X has shape {X.shape}")
        return X

    def _data(self, X, y):
        """X and y side by side, a row per sample, as grad_batch reads them,
        and the shape of one target."""
        X = self._features(X)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim not in (1, 2) or len(y) != len(X):
            raise ValueError(f"y must have one entry (or row) per row of X: X has shape {X.shape}, y {y.shape}")
        if not len(X):
            raise ValueError("training needs at least one row of data")
        if self._check_targets is not None:
            self._check_targets(y, self.model.nout)
        nx = X.shape[1]
        data = np.empty((len(X), nx + (y.shape[1] if y.ndim == 2 else 1)))
        data[:, :nx] = X
        if y.ndim == 1:
            data[:, nx] = y
        else:
            data[:, nx:] = y
        return data, y.shape[1:]

    def _sample_loss(self, shape):
        """The target leaves, the loss of one sample and the C array of the
        input leaves' indices (features, then targets), for a target of that
        shape (a number, or a list of them), built the first time."""
        if shape not in self._sample_losses:
            tape = self.model.tape
            if shape:
                targets = [tape.term(f"y{i}") for i in range(shape[0])]
                loss = self.loss(self._outputs, targets)
            else:
                targets = [tape.term("y")]
                loss = self.loss(self._outputs, targets[0])
            if type(loss) is not Term or loss.tape is not tape:
                raise TypeError(f"the loss must give a Term of the model's tape, not {loss!r}")
            indices = batch.node_indices(tape, self._inputs + targets, "inputs")
            self._sample_losses[shape] = targets, loss, indices
        return self._sample_losses[shape]


class _Progress:
    """Epoch, loss and speed: tqdm's bar when installed, else one line
    rewritten in place at most ten times a second; nothing when off."""

    def __init__(self, epochs, on):
        self.shown = bool(on)
        self._bar = None
        if not self.shown:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._epochs, self._done, self._start, self._last = epochs, 0, time.perf_counter(), 0.0
        else:
            self._bar = tqdm(total=epochs, unit="epoch", leave=True)

    def update(self, n, loss):
        if not self.shown:
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            self._bar.update(n)
            return
        self._done += n
        now = time.perf_counter()
        if now - self._last >= 0.1 or self._done == self._epochs:
            self._last = now
            rate = self._done / max(now - self._start, 1e-9)
            line = f"epoch {self._done}/{self._epochs}  loss {loss:.4g}  {rate:.0f} epochs/s"
            sys.stderr.write("\r" + line.ljust(60))  # the padding covers a longer last line
            sys.stderr.flush()

    def close(self):
        if self._bar is not None:
            self._bar.close()
        elif self.shown:
            sys.stderr.write("\n")
