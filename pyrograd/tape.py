"""The tape and its terms.

A Tape owns a C node arena; a Term is a cheap handle (tape, index) to one
node.  Every operator on Terms appends one node with a single C call, and
reading `.value`, `derive` or `backprop` first re-evaluates whatever a `set`
made stale, so a value read is never out of date.
"""
import numbers
import operator
import os
import weakref

from ._binding import OPS, PROGRESS_MS, ParkedErrors, ffi, lib, raise_status
from .errors import TapeMismatchError

_NUMBER_TYPES = (float, int)

# Hot-path names, looked up once.
_pg_binary = lib.pg_binary
_pg_binary_const = lib.pg_binary_const
_pg_unary = lib.pg_unary
_pg_peek_value = lib.pg_peek_value
_pg_peek_grad = lib.pg_peek_grad

_ADD, _SUB, _MUL, _DIV = OPS["add"], OPS["sub"], OPS["mul"], OPS["div"]
_POW, _POWC, _MAX, _MIN = OPS["pow"], OPS["powc"], OPS["max"], OPS["min"]
_NEG, _ABS, _EXP, _LOG, _SQRT = OPS["neg"], OPS["abs"], OPS["exp"], OPS["log"], OPS["sqrt"]
_SIN, _COS, _TAN, _TANH = OPS["sin"], OPS["cos"], OPS["tan"], OPS["tanh"]
_SIGMOID, _RELU, _SOFTPLUS = OPS["sigmoid"], OPS["relu"], OPS["softplus"]
_LEAF = OPS["leaf"]


def _is_number(x):
    return isinstance(x, _NUMBER_TYPES) or (
        isinstance(x, numbers.Real) and not isinstance(x, Term)
    )


def encoded_name(name, what):
    """name (a str) as the C core's NUL-terminated UTF-8, where a NUL inside
    would cut it short: refused, as every place a name enters refuses it."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if "\0" in name:
        raise ValueError(f"{what} holds a NUL character ('\\0'), which a name cannot hold: {name!r}")
    return name.encode()


def _value_of(x):
    if type(x) is Term:
        return x.value
    if _is_number(x):
        return x
    raise TypeError(f"a Term compares with a Term or a real number, not {type(x).__name__}")


# The tapes pyrograd.function is tracing, each with the list its guards go
# into: (comparison, left, right, outcome), left and right a Term or a number.
_tracing = {}

_FROZEN = (
    "a Term cannot become a float inside a traced function (pg.function): float(x), "
    "math.sin(x), math.exp(x) and the like would freeze the first call's value and lose "
    "the gradient.  Use pg.sin, pg.exp, pg.log, pg.sqrt, pg.cos, pg.tan, pg.tanh, pg.abs, "
    "pg.maximum ..., which build nodes of the graph"
)


def _compare(term, other, comparison):
    """comparison(term's value, other's value); a guard while tracing."""
    outcome = comparison(term.value, _value_of(other))
    if _tracing:
        guards = _tracing.get(term.tape)
        if guards is None and type(other) is Term:
            guards = _tracing.get(other.tape)
        if guards is not None:
            guards.append((comparison, term, other, outcome))
    return outcome


# Every live tape, for the child of a fork (below).
_tapes = weakref.WeakSet()


def _after_fork_in_child():
    """A tape that another thread was using when the process forked would
    stay busy for ever in the child, which has no such thread: give it back,
    as a failed call leaves it (pg_tape_after_fork)."""
    for tape in list(_tapes):
        lib.pg_tape_after_fork(tape._ptr)


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Tape:
    """An arena of scalar nodes in the order they were built.

    >>> tape = Tape()
    >>> a = tape.term("a", 2.0)
    >>> y = a * a + 1
    >>> y.value, y.derive(a)
    (5.0, 4.0)
    """

    __slots__ = ("_ptr", "_owner", "_pending", "_functions", "_alive", "__weakref__")

    def __init__(self):
        self._adopt(lib.pg_tape_new(), None)

    @classmethod
    def _with_allocator(cls, allocator):
        """A tape whose C core allocates through `allocator`, a cffi
        pg_alloc_fn (tests make it fail on purpose)."""
        tape = cls.__new__(cls)
        tape._adopt(lib.pg_tape_new_with_alloc(allocator, ffi.NULL), allocator)
        return tape

    def _adopt(self, ptr, allocator):
        if ptr == ffi.NULL:
            raise MemoryError("out of memory creating a tape")
        if allocator is None:
            self._owner = ffi.gc(ptr, lib.pg_tape_free)  # frees the C tape with this object
        else:
            def free(ptr, allocator=allocator):  # keeps the allocator alive for the last free
                lib.pg_tape_free(ptr)

            self._owner = ffi.gc(ptr, free)
        self._ptr = ptr  # the bare pointer: cffi passes it a little faster
        _tapes.add(self)
        self._pending = ParkedErrors()  # exceptions raised by user functions mid-sweep
        # (name, id(f), id(df), id(d2f)) -> (function id, (name, f, df, d2f))
        self._functions = {}
        # Everything the C function table points into (callback wrappers,
        # native functions), as lists by their id: C's pointers never dangle.
        self._alive = {}
        # Lets Ctrl-C stop a long call (see _binding.pg_py_progress).
        self._check(lib.pg_progress_handler(ptr, PROGRESS_MS, lib.pg_py_progress, ffi.NULL))

    def term(self, name=None, value=0.0):
        """A new leaf: a variable that `set` can change. `name` may be None."""
        return self._new_value(lib.pg_leaf, name, value)

    def const(self, value, name=None):
        """A new constant node."""
        return self._new_value(lib.pg_const, name, value)

    def _new_value(self, make, name, value):
        if not _is_number(value):
            raise TypeError(f"a value must be a real number, not {type(value).__name__}")
        if name is None:
            index = make(self._ptr, float(value), ffi.NULL)
        elif isinstance(name, str):
            index = make(self._ptr, float(value), encoded_name(name, "a name"))
        else:
            raise TypeError(f"a name must be a str or None, not {type(name).__name__}")
        return self._term(index)

    def _term(self, index):
        """Wraps a node index returned by C (negative: a status)."""
        if index < 0:
            raise_status(self, -index)
        term = Term()
        term.tape = self
        term.index = index
        return term

    def _check(self, code):
        """Raises the failure of a call's status code; after a call that
        succeeded, forgets the exceptions of functions that failed in nodes it
        did not need."""
        if code:
            raise_status(self, code)
        if self._pending:
            self._pending.forget_this_calls()

    def __len__(self):
        n = lib.pg_size(self._ptr)
        if n < 0:
            raise_status(self, -n)
        return n

    def __bool__(self):
        return True  # even when empty, and without asking a tape another thread may hold

    def __getitem__(self, index):
        """The Term of node `index` (negative counts from the end, as in a list)."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"a tape is indexed by an int, not {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"node {index} does not exist (the tape has {n} nodes)")
        return self._term(index % n)

    def reserve(self, nodes):
        """Makes room for `nodes` nodes in all, so that building up to that many
        allocates nothing more (and a big tape has no slack); MemoryError when
        it cannot."""
        bulk.reserve(self, nodes)

    # ---- whole tapes as arrays (pyrograd.bulk)
    def extend(self, op, a=None, b=None, value=None, names=None):
        """Appends len(op) nodes in one call, each checked as the operators
        check theirs; on any error nothing is appended.  Returns the range of
        the new nodes' indices (`tape[i]` gives a Term).

        op: op names ("leaf", "const", "add", "powc", "call", ...) or their
        codes (a uint8 array); a, b: uint32 arrays of operand node indices
        (earlier nodes; CALL's b is its function); value: float64 values of
        the leaves and constants; names: {node index: name} for leaves and
        constants.  `tape.extend(**other.to_arrays())` copies other's nodes.
        """
        return bulk.extend(self, op, a, b, value, names)

    def to_arrays(self, start=0, stop=None):
        """Nodes [start, stop) as the arrays `extend` takes: op, a, b, value
        (of leaves and constants; 0 for op nodes, whose values `values` gives)
        and names."""
        return bulk.to_arrays(self, start, stop)

    # ---- pickle and copy: the nodes, names, values of leaves and constants,
    # and the user functions (which must pickle too); not the grads.
    def __reduce__(self):
        return bulk.restore, (bulk.state(self, for_pickle=True),)

    def __deepcopy__(self, memo=None):
        """A new tape with the same nodes; it shares this tape's user functions
        (lambdas and native pointers too)."""
        return bulk.restore(bulk.state(self, for_pickle=False))

    __copy__ = __deepcopy__  # a tape has nothing a shallow copy could share

    @property
    def memory(self):
        """Bytes held by the C arena (nodes, names, function table)."""
        n = lib.pg_memory(self._ptr)
        if n < 0:
            raise_status(self, -n)
        return n

    # ---- numpy in and out (pyrograd.batch): one C call each
    def values(self, terms):
        """The current values of `terms` as a float64 array."""
        return batch.values(self, terms)

    def grads(self, terms):
        """The grads of `terms` (from the last backprop or grad_batch) as an array."""
        return batch.grads(self, terms)

    def set_values(self, terms, array):
        """Sets each leaf in `terms` to the matching entry of `array`."""
        batch.set_values(self, terms, array)

    def set_grads(self, terms, array):
        """Sets the grads of `terms` (say, a sum of two gradients for an optimizer's step)."""
        batch.set_grads(self, terms, array)

    def eval_batch(self, outputs, inputs, data, threads=None):
        """Evaluates `outputs` for every row of `data` (shape (N, len(inputs))),
        row r written into the `inputs` leaves.  Returns shape (N, len(outputs)),
        or (N,) for a single output Term.  The leaves keep their values.

        threads=None uses every core when the batch is big enough to pay for
        them; threads=1 stays on this thread.
        """
        return batch.eval_batch(self, outputs, inputs, data, threads)

    def grad_batch(self, loss, inputs, data, wrt, reduction="sum", threads=None, penalty=None):
        """The sum (or mean) of `loss` over the rows of `data`, and its gradient
        with respect to each Term in `wrt`: returns (float, array).  The
        gradient is also left in `.grad` of the `wrt` terms, for an optimizer.

        penalty, a Term that does not depend on the inputs (an L2 term, say),
        is added once, with its gradient, rather than once a row.

        With threads=1 the result equals a Python loop of set and backprop to
        the last bit; with more, partial sums are added in a fixed order.
        """
        return batch.grad_batch(self, loss, inputs, data, wrt, reduction, threads, penalty)

    def dot(self, **options):
        """Graphviz DOT text of the whole tape; see pyrograd.dot.to_dot."""
        from .dot import to_dot

        return to_dot(self, None, **options)

    def __repr__(self):
        n = lib.pg_size(self._ptr)
        return f"<pyrograd.Tape of {n} nodes>" if n >= 0 else "<pyrograd.Tape (in use)>"


# New Terms are made as Term() and then filled in: Term has no __init__, and
# calling the class takes about 25 ns less than object.__new__(Term), out of
# the 350 ns an operator costs.


def _binary(left, right, op):
    """left op right, where at least one side is a Term."""
    if type(left) is Term:
        tape = left.tape
        if type(right) is Term:
            if right.tape is not tape:
                raise TapeMismatchError(
                    "these terms belong to different tapes; build each expression on one tape"
                )
            index = _pg_binary(tape._ptr, op, left.index, right.index)
        elif _is_number(right):
            index = _pg_binary_const(tape._ptr, op, left.index, right, 0)
        else:
            return NotImplemented
    elif _is_number(left):
        tape = right.tape
        index = _pg_binary_const(tape._ptr, op, right.index, left, 1)
    else:
        return NotImplemented
    if index < 0:
        raise_status(tape, -index)
    term = Term()
    term.tape = tape
    term.index = index
    return term


def _operator(op, binary, number_op=None):
    """self op other.  Terms and Python floats and ints are inlined: they are
    the hot path.  binary is the C call of op (lib.pg_mul for _MUL); number_op
    replaces op when other is a number."""
    number_op = op if number_op is None else number_op

    def method(self, other):
        tape = self.tape
        kind = type(other)
        if kind is Term and other.tape is tape:
            index = binary(tape._ptr, self.index, other.index)
        elif kind is float or kind is int:
            index = _pg_binary_const(tape._ptr, number_op, self.index, other, 0)
        else:
            return _binary(self, other, number_op if _is_number(other) else op)
        if index < 0:
            raise_status(tape, -index)
        term = Term()
        term.tape = tape
        term.index = index
        return term

    return method


def _reflected(op):
    """other op self, for a number on the left."""

    def method(self, other):
        kind = type(other)
        if kind is float or kind is int:
            tape = self.tape
            index = _pg_binary_const(tape._ptr, op, self.index, other, 1)
            if index < 0:
                raise_status(tape, -index)
            term = Term()
            term.tape = tape
            term.index = index
            return term
        return _binary(other, self, op)

    return method


class Term:
    """A handle to one node of a tape. Build expressions with operators and
    the functions in pyrograd (exp, log, tanh, ...); read `.value` and
    `.grad`; differentiate with `derive` and `backprop`."""

    __slots__ = ("tape", "index")

    # numpy scalars on the left defer to our reflected operators instead of
    # making object arrays.
    __array_ufunc__ = None

    # ---- arithmetic: each appends one node (and a constant for a number)
    __add__, __radd__ = _operator(_ADD, lib.pg_add), _reflected(_ADD)
    __sub__, __rsub__ = _operator(_SUB, lib.pg_sub), _reflected(_SUB)
    __mul__, __rmul__ = _operator(_MUL, lib.pg_mul), _reflected(_MUL)
    __truediv__, __rtruediv__ = _operator(_DIV, lib.pg_div), _reflected(_DIV)
    __rpow__ = _reflected(_POW)
    # A number exponent is a constant (POWC): no gradient flows to it.
    __pow__ = _operator(_POW, lib.pg_pow, number_op=_POWC)

    def __neg__(self):
        return self._unary(_NEG)

    def __pos__(self):
        return self

    def __abs__(self):
        return self._unary(_ABS)

    def _unary(self, op):
        tape = self.tape
        index = _pg_unary(tape._ptr, op, self.index)
        if index < 0:
            raise_status(tape, -index)
        term = Term()
        term.tape = tape
        term.index = index
        return term

    # ---- math functions as methods (pyrograd.exp(x) is the same as x.exp())
    def exp(self):
        return self._unary(_EXP)

    def log(self):
        return self._unary(_LOG)

    def sqrt(self):
        return self._unary(_SQRT)

    def sin(self):
        return self._unary(_SIN)

    def cos(self):
        return self._unary(_COS)

    def tan(self):
        return self._unary(_TAN)

    def tanh(self):
        return self._unary(_TANH)

    def sigmoid(self):
        return self._unary(_SIGMOID)

    def relu(self):
        return self._unary(_RELU)

    def softplus(self):
        return self._unary(_SOFTPLUS)

    def abs(self):
        return self._unary(_ABS)

    def maximum(self, other):
        return functions.maximum(self, other)

    def minimum(self, other):
        return functions.minimum(self, other)

    def apply(self, name, f, df, d2f=None):
        """A custom unary op: f(x) with derivative df(x); see pyrograd.apply."""
        return functions.apply(self, name, f, df, d2f)

    # ---- values and derivatives
    @property
    def value(self):
        """The node's value, re-evaluated first if a `set` made it stale."""
        value = _pg_peek_value(self.tape._ptr, self.index)
        if value != value:  # stale, busy, or a NaN: ask with a status
            out = ffi.new("double *")
            self.tape._check(lib.pg_value(self.tape._ptr, self.index, out))
            value = out[0]
        return value

    def eval(self):
        """Returns the current value (the same as `.value`)."""
        return self.value

    def __float__(self):
        """The current value: float(term), and so math.sin(term), gives a
        plain number cut off from the graph.  Inside a traced function that
        would freeze the first call's value, so there it is a TypeError."""
        if _tracing and self.tape in _tracing:
            raise TypeError(_FROZEN)
        return self.value

    def set(self, value):
        """Gives a leaf a new value; whatever depends on it will be re-evaluated."""
        if not _is_number(value):
            raise TypeError(f"a value must be a real number, not {type(value).__name__}")
        self.tape._check(lib.pg_set(self.tape._ptr, self.index, value))

    @property
    def grad(self):
        """d(output)/d(this node) from the last `backprop` on this tape (0.0 before any)."""
        grad = _pg_peek_grad(self.tape._ptr, self.index)
        if grad != grad:  # busy, or a NaN: ask with a status
            out = ffi.new("double *")
            self.tape._check(lib.pg_grad(self.tape._ptr, self.index, out))
            grad = out[0]
        return grad

    def derive(self, wrt):
        """Forward-mode derivative d self / d wrt at the current values."""
        if type(wrt) is not Term:
            raise TypeError(f"derive takes a Term, not {type(wrt).__name__}")
        if wrt.tape is not self.tape:
            raise TapeMismatchError("derive: the two terms belong to different tapes")
        result = ffi.new("double *")
        self.tape._check(lib.pg_derive(self.tape._ptr, self.index, wrt.index, result))
        return result[0]

    def backprop(self):
        """Reverse sweep from this term: afterwards every term's `.grad` is
        d self / d term (0.0 for terms this one does not depend on)."""
        self.tape._check(lib.pg_backprop(self.tape._ptr, self.index))

    # ---- identity and display
    @property
    def name(self):
        """The name given to a leaf or constant, or None."""
        name = ffi.new("char **")
        self.tape._check(lib.pg_name(self.tape._ptr, self.index, name))
        return None if name[0] == ffi.NULL else ffi.string(name[0]).decode()

    @property
    def is_leaf(self):
        op = lib.pg_op(self.tape._ptr, self.index)
        if op < 0:
            raise_status(self.tape, -op)
        return op == _LEAF

    def dot(self, **options):
        """Graphviz DOT text of what this term depends on; see pyrograd.dot.to_dot."""
        from .dot import to_dot

        return to_dot(self.tape, self, **options)

    # Comparisons compare current values and are not recorded in the graph,
    # so Python control flow can run on them.  While pyrograd.function traces
    # a tape, each one (and each bool) is kept as a guard that later calls
    # check against their own values (see pyrograd.trace).
    def __lt__(self, other):
        return _compare(self, other, operator.lt)

    def __le__(self, other):
        return _compare(self, other, operator.le)

    def __gt__(self, other):
        return _compare(self, other, operator.gt)

    def __ge__(self, other):
        return _compare(self, other, operator.ge)

    def __bool__(self):
        """Whether the value is not zero, as for a float."""
        return _compare(self, 0.0, operator.ne)

    def __eq__(self, other):
        """Node identity, so that Terms live in sets and dicts; with a number
        it is a TypeError (it would not compare values)."""
        if type(other) is Term:
            return other.tape is self.tape and other.index == self.index
        if _is_number(other):
            raise TypeError(
                "== and != between a Term and a number are refused: on Terms they compare nodes "
                "(so Terms work in sets and dicts), not values.  Compare values with term.value == x, "
                "or, in a traced function, with <, <=, >, >= or bool(term) (nonzero)")
        return NotImplemented

    def __hash__(self):
        return hash((id(self.tape), self.index))

    def __reduce__(self):
        # The tape comes along (once, however many of its terms are pickled together).
        return bulk.term_at, (self.tape, self.index)

    def __repr__(self):
        label = self.name or f"#{self.index}"
        try:
            return f"<Term {label} = {self.value!r}>"
        except Exception as error:  # a user function failing must not break repr
            return f"<Term {label} (no value: {type(error).__name__})>"


# Last, because these modules need Term (and Term's methods need them).
from . import batch, bulk, functions  # noqa: E402
