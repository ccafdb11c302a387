"""Item 5: unpickling a tape whose function table or registrations were
dropped or altered raises pickle.UnpicklingError or ValueError, never
aborts, never leaves a tape that crashes later; a huge derivative level
does not overflow."""
import copy
import math
import pickle

import pyrograd as pg
from _hostile import ok


def f(v):
    return math.sin(v)


def df(v):
    return math.cos(v)


def d2f(v):
    return -math.sin(v)


SIN = pg.unary("sin_u", f, pg.unary("cos_u", df, pg.unary("nsin_u", d2f, None)))

tape = pg.Tape()
x = tape.term("x", 0.5)
y = pg.apply(x, "f", f, df, d2f) * SIN(x)
y2 = pg.grad(pg.grad(y, x), x)  # derivative functions made from f's orders
want = (y.value, y2.value)
restore, (state,) = tape.__reduce__()
assert pickle.loads(pickle.dumps(tape))[y2.index].value == want[1]


class Tampered:
    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return restore, (self.state,)


def works(loaded):
    """A tape that loaded must be right, and stay right under use."""
    lx, ly, ly2 = loaded[x.index], loaded[y.index], loaded[y2.index]
    assert (ly.value, ly2.value) == want
    lx.set(0.25)
    for k in range(1, 7):  # higher orders, from the loaded function table
        try:
            pg.grad(ly, lx)
            ly = pg.grad(ly, lx)
            ly.value
        except pg.DerivativeError:
            break
    # applying the same functions again reuses what the registrations say
    assert pg.apply(lx, "f", f, df, d2f).value == f(0.25)
    assert SIN(lx).value == f(0.25)
    pickle.loads(pickle.dumps(loaded))
    copy.deepcopy(loaded)


def tampered(change):
    s = copy.deepcopy(state)
    change(s)
    return s


def set_function(k, field, value):
    def change(s):
        entry = list(s["functions"][k])
        entry[field] = value
        s["functions"][k] = tuple(entry)
    return change


def set_registration(k, field, value):
    def change(s):
        entry = list(s["registrations"][k])
        entry[field] = value
        s["registrations"][k] = tuple(entry)
    return change


n_fns = len(state["functions"])
n_callables = len(state["callables"])
CASES = {
    "no functions": lambda s: s.update(functions=[]),
    "one function fewer": lambda s: s.update(functions=s["functions"][:-1]),
    "no callables": lambda s: s.update(callables=[]),
    "a callable that is not callable": lambda s: s.update(callables=[(3.0, "f")] + s["callables"][1:]),
    "a slot past the callables": set_function(0, 1, [n_callables + 5, None, None]),
    "a negative slot": set_function(0, 1, [-1, None, None]),
    "a slot that is not an int": set_function(0, 1, ["f", None, None]),
    "a derivative link past the table": set_function(0, 2, n_fns + 7),
    "a derivative link to itself": set_function(0, 2, 0),
    "a huge derivative link": set_function(0, 2, 2**40),
    "a base past the table": set_function(0, 3, n_fns + 7),
    "a negative base": set_function(0, 3, -5),
    "a huge level": set_function(0, 4, 2**31 - 1),
    "huge levels everywhere": lambda s: s.update(functions=[(*e[:4], 2**31 - 1) for e in s["functions"]]),
    "a huger level": set_function(0, 4, 2**63),
    "a negative level": set_function(0, 4, -3),
    "a name that is not a str": set_function(0, 0, b"f"),
    "a name with a NUL": set_function(0, 0, "f\0g"),
    "registrations dropped": lambda s: s.update(registrations=[]),
    "a registration past the table": set_registration(0, 4, n_fns + 3),
    "a negative registration": set_registration(0, 4, -1),
    "a registration that is not an int": set_registration(0, 4, "0"),
    "a registration of another function": set_registration(0, 4, n_fns - 1),
    "a registration that is not a tuple": lambda s: s.update(registrations=[3]),
    "functions that are not a list": lambda s: s.update(functions=None),
    "a function entry too short": lambda s: s.update(functions=[("f",)] + s["functions"][1:]),
}

failures = []
for name, change in CASES.items():
    blob = pickle.dumps(Tampered(tampered(change)))
    try:
        loaded = pickle.loads(blob)
    except (pickle.UnpicklingError, ValueError):
        continue
    except Exception as error:  # noqa: BLE001
        failures.append(f"{name}: {type(error).__name__}: {error}")
        continue
    # it loaded: then it must be a sound tape, right to the last bit
    try:
        works(loaded)
    except Exception as error:  # noqa: BLE001
        failures.append(f"{name}: loaded, then {type(error).__name__}: {error}")
assert not failures, "\n".join(["not UnpicklingError or ValueError:"] + failures)
ok()
