"""The exceptions pyrograd raises.

Every error that comes from pyrograd itself is a PyrogradError; each subclass
also derives from the builtin exception a Python user would expect, so
`except ValueError` keeps working.  Out of memory is the builtin MemoryError,
and an exception raised by a user function passed to `apply` reaches the
caller unchanged.
"""


class PyrogradError(Exception):
    """Base class of pyrograd's own errors."""


class TapeMismatchError(PyrogradError, ValueError):
    """Terms of two different tapes were combined."""


class NotALeafError(PyrogradError, TypeError):
    """`set` was called on a term that is not a leaf (an op or a constant)."""


class TapeBusyError(PyrogradError, RuntimeError):
    """A user function called back into the tape that was evaluating it."""


class DerivativeError(PyrogradError):
    """A derivative was needed that a user function does not provide."""


class GraphvizNotFoundError(PyrogradError, RuntimeError):
    """A picture was asked for, and graphviz's `dot` program is not installed."""
