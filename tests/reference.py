"""A small pure-Python reference for pyrograd's tests (test_properties.py,
test_fuzz.py): it evaluates a graph spec with the math module (forward
values) and runs reverse mode over it (adjoints of every node).

Alongside each value and adjoint it carries a first-order bound on the
rounding error that quantity can have picked up on its way through the graph
(errors of operands times local derivatives, errors of local derivatives from
the second derivatives, plus a couple of ulps per operation).  pyrograd's
values, `derive` and `backprop` must agree with the reference to a small
multiple of that bound: a few ulps where the graph is well conditioned, more
only where cancellation really loses digits.
"""
import math

EPS = 2.0 ** -52
TINY = 1e-300  # below this, subnormal rounding is not worth modelling
# Allowed difference: this many times the first-order error bound.
K = 32.0


class Skip(Exception):
    """The reference declines these leaf values: a pole, a kink or an overflow
    is too close for a first-order error bound to hold."""


# ---- the reference ----------------------------------------------------------------

def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _well_away(distance, error, what):
    """The operand is far from a singularity compared with its error."""
    if not (distance > 1e-30 and error <= 1e-6 * distance):
        raise Skip(what)


def _kink(x, ex):
    if ex > 0 and abs(x) <= K * ex:
        raise Skip("near a kink")


# Derivatives that are computed from the op's own value, as PyTorch does
# (tanh' = 1 - v*v, sigmoid' = v*(1 - v)), have an absolute rounding error of
# an ulp of 1, not of the (possibly tiny) derivative: the extra error allowed.
ABSOLUTE_DERIVATIVE_ROUNDING = {"tanh": 2 * EPS, "sigmoid": EPS}


def _unary(op, x, ex):
    """(value, f'(x), f''(x), Lipschitz bound for error propagation)."""
    if op == "neg":
        return -x, -1.0, 0.0, 1.0
    if op == "abs":
        _kink(x, ex)
        return abs(x), (1.0 if x > 0 else -1.0 if x < 0 else 0.0), 0.0, 1.0
    if op == "exp":
        if x > 50:
            raise Skip("exp overflow")
        v = math.exp(x)
        return v, v, v, v
    if op == "log":
        _well_away(x, ex, "log pole")
        return math.log(x), 1.0 / x, -1.0 / (x * x), 1.0 / x
    if op == "sqrt":
        _well_away(x, ex, "sqrt pole")
        v = math.sqrt(x)
        return v, 0.5 / v, -0.25 / (x * v), 0.5 / v
    if op == "sin":
        return math.sin(x), math.cos(x), -math.sin(x), 1.0
    if op == "cos":
        return math.cos(x), -math.sin(x), -math.cos(x), 1.0
    if op == "tan":
        c = math.cos(x)
        _well_away(abs(c), ex, "tan pole")
        t = math.tan(x)
        return t, 1.0 / (c * c), 2.0 * t / (c * c), 1.0 / (c * c)
    if op == "tanh":
        sech = 0.0 if abs(x) > 350 else 1.0 / math.cosh(x)
        t = math.tanh(x)
        return t, sech * sech, -2.0 * t * sech * sech, 1.0
    if op == "sigmoid":
        s = _sigmoid(x)
        d = s * (1.0 - s)
        return s, d, d * (1.0 - 2.0 * s), 0.25
    if op == "relu":
        _kink(x, ex)
        return (x if x > 0 else 0.0), (1.0 if x > 0 else 0.0), 0.0, 1.0
    if op == "softplus":
        s = _sigmoid(x)
        return max(x, 0.0) + math.log1p(math.exp(-abs(x))), s, s * (1.0 - s), 1.0
    if op in ("step", "sign"):  # the derivatives of relu and abs: flat but at 0
        _kink(x, ex)
        v = float(x > 0) if op == "step" else (1.0 if x > 0 else -1.0 if x < 0 else 0.0)
        return v, 0.0, 0.0, 0.0
    raise AssertionError(op)


def _pow(x, y):
    try:
        return math.pow(x, y)
    except (OverflowError, ValueError, ZeroDivisionError):
        raise Skip("pow out of range") from None


def _binary(op, x, y, ex, ey, same, y_is_number=False):
    """(value, d/dx, d/dy, error of d/dx, error of d/dy, Lipschitz x, Lipschitz y)."""
    if op == "add":
        return x + y, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0
    if op == "sub":
        return x - y, 1.0, -1.0, 0.0, 0.0, 1.0, 1.0
    if op == "mul":
        return x * y, y, x, ey, ex, abs(y), abs(x)
    if op == "chain":  # the chain rule's product: x * y, and 0 when either is 0 (even times inf)
        return (0.0 if x == 0 or y == 0 else x * y), y, x, ey, ex, abs(y), abs(x)
    if op == "div":
        _well_away(abs(y), ey, "division by ~0")
        dx, dy = 1.0 / y, -x / (y * y)
        edx = ey / (y * y) + EPS * abs(dx)
        edy = ex / (y * y) + 2.0 * abs(dy) * ey / abs(y) + 2 * EPS * abs(dy)
        return x / y, dx, dy, edx, edy, abs(dx), abs(dy)
    if op == "pow":
        integer = float(y).is_integer()
        if not (y_is_number and integer):
            if x < 0:
                raise Skip("real power of a negative base")
            _well_away(x, ex, "power of ~0")
        elif y < 0:
            _well_away(abs(x), ex, "negative power of ~0")
        v = _pow(x, y)
        dx = 0.0 if y == 0 else y * _pow(x, y - 1)
        dxx = 0.0 if y * (y - 1) == 0 else y * (y - 1) * _pow(x, y - 2)
        edx = abs(dxx) * ex + 2 * EPS * abs(dx)
        if y_is_number:
            dy = edy = 0.0
        else:
            lx = math.log(x)
            dy = v * lx
            dxy = _pow(x, y - 1) * (1.0 + y * lx)  # d(dx)/dy = d(dy)/dx
            edx += abs(dxy) * ey
            edy = abs(dxy) * ex + abs(v * lx * lx) * ey + 2 * EPS * abs(dy)
        return v, dx, dy, edx, edy, abs(dx), abs(dy)
    if op in ("max", "min"):
        if not same and abs(x - y) <= K * (ex + ey) and ex + ey > 0:
            raise Skip("near a tie")
        if x == y:
            return x, 0.5, 0.5, 0.0, 0.0, 1.0, 1.0
        first = x > y if op == "max" else x < y
        return (x if first else y), float(first), float(not first), 0.0, 0.0, 1.0, 1.0
    if op == "dmax":  # d max(x, y) / dx: a step, split evenly at a tie
        if not same and abs(x - y) <= K * (ex + ey) and ex + ey > 0:
            raise Skip("near a tie")
        return (1.0 if x > y else 0.5 if x == y else 0.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    if op == "xlog":  # y log x, the d/dy of x ** y over x ** y
        _well_away(x, ex, "log pole")
        lx = math.log(x)
        dx, dy = y / x, lx
        edx = abs(y / (x * x)) * ex + ey / x + 2 * EPS * abs(dx)
        edy = ex / x + 2 * EPS * abs(dy)
        return y * lx, dx, dy, edx, edy, abs(dx), abs(dy)
    raise AssertionError(op)


# User functions the tests apply, by name: (f, f', f'').  Module level, so
# that tapes holding them pickle.
def cube(x):
    return x * x * x


def dcube(x):
    return 3.0 * x * x


def d2cube(x):
    return 6.0 * x


def gauss(x):
    return math.exp(-x * x)


def dgauss(x):
    return -2.0 * x * math.exp(-x * x)


def d2gauss(x):
    return (4.0 * x * x - 2.0) * math.exp(-x * x)


# math.sin raises on infinities; a tape's functions see them in a batch of
# any rows, and give NaN as the tape's own sin does.
def sin(x):
    return math.sin(x) if math.isfinite(x) else math.nan


def cos(x):
    return math.cos(x) if math.isfinite(x) else math.nan


def neg_sin(x):
    return -sin(x)


def neg_cos(x):
    return -cos(x)


FUNCTIONS = {
    "cube": (cube, dcube, d2cube),
    "gauss": (gauss, dgauss, d2gauss),
    "sin": (sin, cos, neg_sin),
}


def _call(name, x, ex):
    """(value, f'(x), f''(x), Lipschitz bound) of user function `name`."""
    f, df, d2f = FUNCTIONS[name]
    d = df(x)
    return f(x), d, d2f(x), abs(d)


def reference(spec, leaf_values):
    """Forward pass of a graph spec.

    Returns (values, value error bounds, partials) where partials[i] lists
    (operand, local derivative, error bound of that derivative).

    spec entries (indices refer to earlier entries):
      ("leaf", k)              the k-th leaf
      ("const", c)
      ("unary", op, i)
      ("binary", op, i, j)     term op term
      ("left", op, i, c)       term op number
      ("right", op, c, i)      number op term
      ("call", name, i)        user function FUNCTIONS[name]
    Raises Skip where the comparison would be ill posed.
    """
    vals, errs, parts = [], [], []
    for node in spec:
        kind = node[0]
        if kind == "leaf":
            v, e, p = float(leaf_values[node[1]]), 0.0, []
        elif kind == "const":
            v, e, p = float(node[1]), 0.0, []
        elif kind in ("unary", "call"):
            _, op, i = node
            v, d, d2, lip = (_unary if kind == "unary" else _call)(op, vals[i], errs[i])
            e = 2 * EPS * abs(v) + lip * errs[i]
            ed = abs(d2) * errs[i] + 2 * EPS * abs(d) + ABSOLUTE_DERIVATIVE_ROUNDING.get(op, 0.0)
            p = [(i, d, ed)]
        elif kind == "binary":
            _, op, i, j = node
            v, dx, dy, edx, edy, lx, ly = _binary(op, vals[i], vals[j], errs[i], errs[j], i == j)
            e = 2 * EPS * abs(v) + lx * errs[i] + ly * errs[j]
            p = [(i, dx, edx), (j, dy, edy)]
        elif kind == "left":
            _, op, i, c = node
            v, dx, _, edx, _, lx, _ = _binary(op, vals[i], float(c), errs[i], 0.0, False, True)
            e = 2 * EPS * abs(v) + lx * errs[i]
            p = [(i, dx, edx)]
        else:
            _, op, c, i = node
            v, _, dy, _, edy, _, ly = _binary(op, float(c), vals[i], 0.0, errs[i], False)
            e = 2 * EPS * abs(v) + ly * errs[i]
            p = [(i, dy, edy)]
        if not (math.isfinite(v) and abs(v) < 1e8):
            raise Skip("value too large")
        if not all(math.isfinite(d) and abs(d) < 1e8 for _, d, _ in p):
            raise Skip("derivative too large")
        vals.append(v)
        errs.append(e)
        parts.append(p)
    return vals, errs, parts


def adjoints(parts, out):
    """Reverse mode from node `out`: (adjoints, their error bounds, ancestors)."""
    n = len(parts)
    adj, err, needed = [0.0] * n, [0.0] * n, [False] * n
    adj[out], needed[out] = 1.0, True
    for i in range(out, -1, -1):
        if not needed[i]:
            continue
        for k, d, ed in parts[i]:
            adj[k] += adj[i] * d
            err[k] += err[i] * abs(d) + abs(adj[i]) * ed + 2 * EPS * abs(adj[i] * d)
            needed[k] = True
    if not all(math.isfinite(a) and abs(a) < 1e100 for a in adj):
        raise Skip("adjoint overflow")
    return adj, err, needed


# ---- comparisons ----------------------------------------------------------------

def check_value(term, expected, error):
    got = term.value
    assert abs(got - expected) <= K * error + TINY, (got, expected, error)


def check_grad(got, expected, error, what):
    assert abs(got - expected) <= K * error + TINY, (what, got, expected, error)
