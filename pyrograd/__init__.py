"""pyrograd: scalar reverse-mode autograd with a C core.

    import pyrograd as pg
    tape = pg.Tape()
    a, b, c = tape.term("a", 123.0), tape.term("b", 321.0), tape.term("c", 42.0)
    y = (a + b) * c
    y.backprop()
    a.grad, b.grad, c.grad       # 42.0, 42.0, 444.0
"""
from .errors import (
    DerivativeError, GraphvizNotFoundError, NotALeafError, PyrogradError, TapeBusyError, TapeMismatchError,
)
from .functions import (
    abs, apply, cos, exp, log, maximum, minimum, relu, sigmoid, sin, softplus, sqrt, tan, tanh, unary,
)
from .tape import Tape, Term
from .derivatives import grad, hessian, jacobian
from .trace import function
from .pictures import animate, render
from . import losses, nn, optim

__version__ = "0.1.0"

__all__ = [
    "Tape", "Term", "optim", "nn", "losses",
    "exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "softplus", "abs",
    "maximum", "minimum", "apply", "unary", "grad", "jacobian", "hessian", "function", "render", "animate",
    "PyrogradError", "TapeMismatchError", "NotALeafError", "TapeBusyError", "DerivativeError",
    "GraphvizNotFoundError",
]
