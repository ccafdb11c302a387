"""Optimizers that update parameter leaves in C, with PyTorch's defaults and
update rules (torch.optim): SGD, Adam, RMSprop, Adagrad.

    opt = pg.optim.Adam([w, b], lr=0.01)
    loss.backprop()            # or tape.grad_batch(loss, inputs, data, [w, b])
    opt.step()                 # one C call for every parameter
    losses = opt.run(loss, inputs, data, epochs=100)   # the whole loop in C

`lr` may be a number or a callable of the step count k (0 for the first
step), e.g. `lambda k: 1.0 - 0.9 * k / 100`.
"""
import numpy as np

from . import batch
from ._binding import ffi, lib
from .errors import TapeMismatchError
from .tape import Term


_pg_optimizer_run = lib.pg_optimizer_run  # looked up once: a training step is tens of microseconds


class Optimizer:
    """Base class: holds the parameters, the C optimizer struct and its state."""

    _kind = None

    def __init__(self, params, lr, **hyper):
        # A tuple, behind a read-only property: C reads the parameters through
        # an index array made here, which a list changed later would outgrow.
        self._params = tuple(params)
        if not self._params:
            raise ValueError("an optimizer needs at least one parameter")
        for p in self._params:
            if type(p) is not Term:
                raise TypeError(f"parameters must be Terms, not {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("parameters must be leaves (made with tape.term)")
        self.tape = self.params[0].tape
        if any(p.tape is not self.tape for p in self.params):
            raise TapeMismatchError("all parameters must be on one tape")
        n = len(self.params)
        self._indices = ffi.new("uint32_t[]", [p.index for p in self.params])
        self._state = np.zeros((2, n))  # momentum or first moment; squares
        c = self._c = ffi.new("pg_optimizer *")
        self.lr = lr
        c.kind = self._kind
        c.n = n
        c.params = self._indices
        c.state1 = ffi.from_buffer("double[]", self._state[0])
        c.state2 = ffi.from_buffer("double[]", self._state[1])
        for name, value in hyper.items():
            setattr(c, name, value)

    @property
    def params(self):
        """The parameters, a tuple: an optimizer's parameters are fixed when it
        is made (make another optimizer to train others)."""
        return self._params

    @property
    def steps(self):
        """Steps taken so far."""
        return self._c.steps

    @property
    def lr(self):
        """The learning rate: a number, or a callable of the step count."""
        return self._lr

    @lr.setter
    def lr(self, lr):
        if not callable(lr):  # checked and handed to C once, not every step
            _check_range("lr", lr, 0.0)
            self._c.lr = float(lr)
        self._lr = lr

    def _lr_at(self, k):
        """A callable lr's value at step k, checked."""
        lr = self._lr(k)
        _check_range("lr", lr, 0.0)
        return float(lr)

    def step(self):
        """Updates every parameter from its .grad, in one C call."""
        if callable(self._lr):
            self._c.lr = self._lr_at(self._c.steps)
        self.tape._check(lib.pg_optimizer_step(self.tape._ptr, self._c))

    def zero_grad(self):
        """Sets the parameters' grads to 0.0."""
        self.tape._check(lib.pg_zero_grads(self.tape._ptr, self._indices, self._c.n))

    def run(self, loss, inputs, data, epochs, reduction="sum", threads=None, penalty=None):
        """`epochs` full-batch steps (grad_batch, then step) in one C call;
        returns the loss of every epoch.  Gives exactly what the Python loop
        of tape.grad_batch and step gives (penalty as in tape.grad_batch)."""
        tape = self.tape
        batch.check_loss(tape, loss)
        penalty = batch.penalty_index(tape, penalty)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, not {epochs!r}")
        mean = batch.reduction_flag(reduction)
        in_idx, n_in = batch.node_indices(tape, inputs, "inputs")
        data = batch.as_array(data, (None, n_in), "data")
        rows = batch.check_rows(data, mean)
        threads = batch.resolve_threads(threads, rows, loss.index + 1)
        return np.array(self._run(loss.index, penalty, in_idx, n_in, data, mean, threads, epochs))

    def _run(self, loss, penalty, in_idx, n_in, data, mean, threads, epochs):
        """run, with its arguments checked and converted (node indices, a
        C array of the inputs' indices; the Trainer keeps them); returns the
        losses as a list."""
        c = self._c
        lrs = ffi.NULL
        if callable(self._lr):
            schedule = np.array([self._lr_at(c.steps + e) for e in range(epochs)])
            lrs = ffi.from_buffer("double[]", schedule)
        losses = ffi.new("double[]", epochs)
        tape = self.tape
        status = _pg_optimizer_run(tape._ptr, c, loss, penalty, in_idx, n_in, ffi.from_buffer("double[]", data),
                                   len(data), mean, threads, epochs, lrs, losses)
        tape._check(status)
        return ffi.unpack(losses, epochs)

    def __repr__(self):
        return f"<pyrograd.optim.{type(self).__name__} of {len(self.params)} parameters, lr={self.lr!r}>"


def _check_range(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    if not value >= low or (high is not None and not value < high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum."""

    _kind = lib.PG_SGD

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        _check_range("momentum", momentum, 0.0)
        _check_range("weight_decay", weight_decay, 0.0)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        super().__init__(params, lr, momentum=momentum, nesterov=bool(nesterov), weight_decay=weight_decay)


class Adam(Optimizer):
    """Adam (Kingma and Ba), with weight decay added to the gradient as in torch.optim.Adam."""

    _kind = lib.PG_ADAM

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        beta1, beta2 = betas
        _check_range("betas[0]", beta1, 0.0, 1.0)
        _check_range("betas[1]", beta2, 0.0, 1.0)
        _check_range("eps", eps, 0.0)
        _check_range("weight_decay", weight_decay, 0.0)
        super().__init__(params, lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)


class RMSprop(Optimizer):
    """RMSprop (not centered), with optional momentum."""

    _kind = lib.PG_RMSPROP

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        _check_range("alpha", alpha, 0.0)
        _check_range("eps", eps, 0.0)
        _check_range("momentum", momentum, 0.0)
        _check_range("weight_decay", weight_decay, 0.0)
        super().__init__(params, lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay)


class Adagrad(Optimizer):
    """Adagrad, with learning-rate decay lr / (1 + (k - 1) lr_decay)."""

    _kind = lib.PG_ADAGRAD

    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
        _check_range("lr_decay", lr_decay, 0.0)
        _check_range("weight_decay", weight_decay, 0.0)
        _check_range("eps", eps, 0.0)
        super().__init__(params, lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
