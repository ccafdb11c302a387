"""Whole tapes in and out: building from arrays, reading into arrays, pickle
and deepcopy.

A tape is four arrays (op, operands a and b, and the values of its leaves
and constants), the names of some leaves and constants, and a table of user
functions.  `extend` appends arrays of nodes in one C call that checks every
node first, so a big tape costs no Python per node; `to_arrays` reads them
back.  A pickle holds the arrays, the names and the function table with the
Python callables in it; op nodes' values are recomputed when first read.
"""
import ctypes
import numbers
import pickle

import numpy as np

from . import batch
from ._binding import OPS, PythonFunction, ffi, lib
from . import functions as user_functions  # Unary, at call time: functions imports tape, which imports this
from .tape import Tape

_LEAF, _CONST, _CALL = OPS["leaf"], OPS["const"], OPS["call"]
_MAX_NODES = 2**32 - 2  # node indices are uint32 (the C core's PG_MAX_NODES)
_FORMAT = 1  # of the pickled state; bump when it changes
_STATE_KEYS = {"op", "a", "b", "values", "names", "functions", "callables", "registrations"}
_INT_MAX = 2**31 - 1  # function ids and derivative levels are C ints


# ---- building and reading -------------------------------------------------------

def reserve(tape, nodes):
    if isinstance(nodes, bool) or not isinstance(nodes, numbers.Integral):
        raise TypeError(f"reserve takes a number of nodes, not {type(nodes).__name__}")
    if nodes < 0:
        raise ValueError(f"cannot reserve a negative number of nodes ({nodes})")
    tape._check(lib.pg_reserve(tape._ptr, min(nodes, 2**64 - 1)))


def _op_codes(op):
    """op as a uint8 array of op codes; a list may hold op names or codes."""
    if isinstance(op, np.ndarray):
        return batch.as_array(op, (None,), "op", np.uint8)
    if not isinstance(op, (list, tuple)):
        raise TypeError(f"op must be a numpy array or a list, not {type(op).__name__}")
    codes = []
    for code in op:
        if isinstance(code, str):
            if code.lower() not in OPS:
                raise ValueError(f"op {code!r} does not exist; the ops are {', '.join(OPS)}")
            code = OPS[code.lower()]
        elif isinstance(code, bool) or not isinstance(code, numbers.Integral):
            raise TypeError(f"op must hold op names or codes, not {type(code).__name__}")
        elif not 0 <= code < len(OPS):
            raise ValueError(f"op code {code} does not exist (there are {len(OPS)} ops)")
        codes.append(code)
    return np.array(codes, dtype=np.uint8)


def _indices(indices, n, what):
    """indices (node indices, or None for zeros) as a uint32 array of length n."""
    if indices is None:
        return np.zeros(n, dtype=np.uint32)
    if isinstance(indices, (list, tuple)):
        array = np.array(indices)
        if array.size and array.dtype.kind not in "iu":
            raise TypeError(f"{what} must hold node indices (ints), not {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > _MAX_NODES):
            raise ValueError(f"{what} holds {array.min() if array.min() < 0 else array.max()}, not a node index")
        indices = array.astype(np.uint32)
    return batch.as_array(indices, (n,), what, np.uint32)


def _encoded_names(names):
    """{node: name} as C arrays: the nodes in order, and the names one after another."""
    if names is None:
        return 0, ffi.NULL, b""
    if not isinstance(names, dict):
        raise TypeError(f"names must be a dict {{node index: name}}, not {type(names).__name__}")
    nodes, text = [], []
    for node in sorted(names):
        name = names[node]
        if not isinstance(name, str):
            raise TypeError(f"the name of node {node} must be a str, not {type(name).__name__}")
        if "\0" in name:
            raise ValueError(f"the name of node {node} holds a NUL character")
        nodes.append(node)
        text.append(name.encode() + b"\0")
    return len(nodes), ffi.new("uint32_t[]", _indices(nodes, len(nodes), "names").tolist()), b"".join(text)


def extend(tape, op, a=None, b=None, value=None, names=None):
    op = _op_codes(op)
    n = len(op)
    if n > _MAX_NODES:
        raise MemoryError(f"a tape holds at most {_MAX_NODES} nodes, {n} were given")
    a, b = _indices(a, n, "a"), _indices(b, n, "b")
    value = ffi.NULL if value is None else ffi.from_buffer("double[]", batch.as_array(value, (n,), "value"))
    n_names, named, text = _encoded_names(names)
    start = len(tape)
    tape._check(lib.pg_import(tape._ptr, n, ffi.from_buffer("uint8_t[]", op),
                              ffi.from_buffer("uint32_t[]", a), ffi.from_buffer("uint32_t[]", b), value,
                              n_names, named, text, len(text)))
    return range(start, start + n)


def to_arrays(tape, start=0, stop=None):
    n_all = len(tape)
    stop = n_all if stop is None else stop
    if not 0 <= start <= stop <= n_all:
        raise IndexError(f"nodes {start} to {stop} are not a range of the tape's {n_all} nodes")
    n = stop - start
    op, a, b = np.empty(n, np.uint8), np.empty(n, np.uint32), np.empty(n, np.uint32)
    value = np.empty(n)
    tape._check(lib.pg_export(tape._ptr, start, n, ffi.from_buffer("uint8_t[]", op),
                              ffi.from_buffer("uint32_t[]", a), ffi.from_buffer("uint32_t[]", b)))
    tape._check(lib.pg_export_values(tape._ptr, start, n, ffi.from_buffer("double[]", value)))
    names = {node: name for node, name in _names(tape) if start <= node < stop}
    return {"op": op, "a": a, "b": b, "value": value, "names": names}


def _names(tape):
    """(node, name) of every name, in node order: two C calls."""
    count = lib.pg_name_count(tape._ptr)
    if count < 0:
        tape._check(-count)
    nodes, names = ffi.new("uint32_t[]", count), ffi.new("const char *[]", count)
    tape._check(lib.pg_export_names(tape._ptr, 0, count, nodes, names))
    return [(nodes[k], ffi.string(names[k]).decode()) for k in range(count)]


def term_at(tape, index):
    """tape[index]; what a pickled Term is rebuilt with."""
    return tape[index]


# ---- the function table ------------------------------------------------------------

def _function_table(tape, for_pickle):
    """The tape's user functions as (functions, callables).

    functions[fn] is (name, slots, deriv, base, level) with the C table's
    link and origin; each of its slots (f, f', f'') is None, an index into
    callables, which holds (Python callable, the role it reports errors as),
    or for a copy in this process a native function pointer.
    """
    functions, callables, seen = [], [], {}
    count = lib.pg_fn_count(tape._ptr)
    if count < 0:
        tape._check(-count)
    orders = lib.PG_FN_ORDERS
    names, deriv, base, level = (ffi.new("const char *[]", count), ffi.new("int[]", count),
                                 ffi.new("int[]", count), ffi.new("int[]", count))
    native, callback, ud = (ffi.new("pg_native_fn[]", count * orders), ffi.new("pg_callback_fn[]", count * orders),
                            ffi.new("void *[]", count * orders))
    tape._check(lib.pg_export_fns(tape._ptr, 0, count, names, deriv, base, level, native, callback, ud))
    for fn in range(count):
        name = ffi.string(names[fn]).decode()
        slots = []
        for at in range(fn * orders, (fn + 1) * orders):
            if native[at] != ffi.NULL:
                if for_pickle:
                    raise pickle.PicklingError(
                        f"cannot pickle this tape: its op {name!r} calls a native function pointer, "
                        "which pickle cannot save (copy.deepcopy of the tape can share it)")
                slots.append(native[at])
            elif callback[at] != ffi.NULL:
                if callback[at] != lib.pg_py_callback:
                    raise TypeError(f"op {name!r} calls a C callback that pyrograd did not set: cannot copy it")
                wrapper = ffi.from_handle(ud[at])
                if id(wrapper) not in seen:
                    if for_pickle:
                        _check_picklable(wrapper)
                    seen[id(wrapper)] = len(callables)
                    callables.append((wrapper.func, wrapper.name))
                slots.append(seen[id(wrapper)])
            else:
                slots.append(None)
        # pg.grad on another thread may have linked fn to a derivative function
        # it made after count was read: left out, the copy makes it again.
        functions.append((name, slots, deriv[fn] if deriv[fn] < count else -1, base[fn], level[fn]))
    return functions, callables


def _check_picklable(wrapper):
    """Raises PicklingError naming the op when pickle cannot save its callable
    (a lambda, a local function): pickle's own error would not say which op."""
    try:
        pickle.dumps(wrapper.func, pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise pickle.PicklingError(
            f"cannot pickle this tape: its op {wrapper.name!r} calls {wrapper.func!r}, which pickle "
            f"cannot save ({error}); define it at module level, or use copy.deepcopy, which shares it"
        ) from error


def _damaged(problem):
    return pickle.UnpicklingError(f"the pickled tape is damaged: {problem}")


def _is_index(value, n):
    return type(value) is int and 0 <= value < n


def _check_functions(functions, callables):
    """Refuses a function table that is not one _function_table gives: every
    slot a callable's index or a native pointer, every link a function, every
    level an int."""
    if not isinstance(callables, list):
        raise _damaged("its callables are not a list")
    for k, entry in enumerate(callables):
        if not (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[0]) and isinstance(entry[1], str)):
            raise _damaged(f"callable {k} is not a (callable, name) pair")
    if not isinstance(functions, list):
        raise _damaged("its functions are not a list")
    if len(functions) > _INT_MAX:
        raise _damaged(f"it has {len(functions)} functions, more than a tape holds")
    for fn, entry in enumerate(functions):
        if not (isinstance(entry, tuple) and len(entry) == 5):
            raise _damaged(f"function {fn} is not a (name, slots, deriv, base, level) tuple")
        name, slots, deriv, base, level = entry
        if not isinstance(name, str) or "\0" in name:
            raise _damaged(f"the name of function {fn} is not a str without NUL characters")
        if not (isinstance(slots, list) and len(slots) == lib.PG_FN_ORDERS):
            raise _damaged(f"function {fn} ({name!r}) does not have {lib.PG_FN_ORDERS} slots")
        for order, slot in enumerate(slots):
            if not (slot is None or _is_index(slot, len(callables)) or _is_native(slot)):
                raise _damaged(f"slot {order} of function {fn} ({name!r}) is {slot!r}, "
                               f"not None or the index of one of its {len(callables)} callables")
        if not (deriv == -1 or _is_index(deriv, len(functions))):
            raise _damaged(f"the derivative of function {fn} ({name!r}) is {deriv!r}, not a function")
        if not _is_index(base, len(functions)):
            raise _damaged(f"the base of function {fn} ({name!r}) is {base!r}, not a function")
        if not (type(level) is int and 0 <= level <= _INT_MAX):
            raise _damaged(f"the level of function {fn} ({name!r}) is {level!r}, not an int from 0 to {_INT_MAX}")


def _is_native(slot):
    # Only a copy in this process has them: pickle cannot save a pointer.
    return isinstance(slot, ffi.CData) and ffi.typeof(slot) is ffi.typeof("pg_native_fn")


def _address(func):
    """The address of a native function given to apply, or None."""
    if isinstance(func, ffi.CData):
        return int(ffi.cast("uintptr_t", func))
    if isinstance(func, ctypes._CFuncPtr):
        return ctypes.cast(func, ctypes.c_void_p).value
    return None


def _check_registrations(registrations, functions, callables):
    """Refuses registrations that do not describe the functions they name:
    apply would reuse such a function and compute something else.  Returns
    the addresses of the native functions they keep alive."""
    if not isinstance(registrations, list):
        raise _damaged("its registrations are not a list")

    def called(slot):  # what a slot calls, comparable with `is` or ==
        if slot is None or isinstance(slot, int):
            return None if slot is None else callables[slot][0]
        return int(ffi.cast("uintptr_t", slot))

    def holds(slot, func):
        return called(slot) == _address(func) if _is_native(slot) else called(slot) is func

    def same(slots, others):
        return all(called(a) is called(b) or (_is_native(a) and called(a) == called(b))
                   for a, b in zip(slots, others))

    registered, natives = set(), set()
    for entry in registrations:
        if not (isinstance(entry, tuple) and len(entry) == 5 and _is_index(entry[4], len(functions))):
            raise _damaged(f"registration {entry!r} is not (name, f, df, d2f, function)")
        registered.add(entry[4])
    for name, f, df, d2f, fn in registrations:
        fn_name, slots, deriv, _, _ = functions[fn]
        # As _register defines it: a pyrograd.unary df (or d2f, when df is
        # not one) is linked, and slot 1 holds df.f (or df).
        linked = isinstance(df, user_functions.Unary) or isinstance(d2f, user_functions.Unary)
        if isinstance(d2f, user_functions.Unary) and not isinstance(df, user_functions.Unary):
            d2f = None
        if name != fn_name or not (holds(slots[0], f) and holds(slots[2], d2f)) or \
                not (isinstance(df, user_functions.Unary) or holds(slots[1], df)):
            raise _damaged(f"the registration of {name!r} does not match function {fn} ({fn_name!r})")
        if linked:
            # linked to the function of df, itself registered, and so on
            if deriv not in registered or not same(functions[deriv][1][:1], slots[1:2]):
                raise _damaged(f"the derivative of function {fn} ({fn_name!r}) is not the function of its df")
        elif deriv != -1 and not same(functions[deriv][1], slots[1:] + [None]):
            # made by grad from fn's next orders
            raise _damaged(f"the derivative of function {fn} ({fn_name!r}) is not made of its next orders")
        natives.update(_address(func) for func in (f, df, d2f) if _address(func) is not None)
    return natives


def _restore_functions(tape, functions, callables, registrations):
    """Rebuilds the function table, and apply's registrations so that
    applying the same functions again reuses them."""
    _check_functions(functions, callables)
    natives = _check_registrations(registrations, functions, callables)
    for fn, (name, slots, _, _, _) in enumerate(functions):
        for slot in slots:
            if _is_native(slot) and int(ffi.cast("uintptr_t", slot)) not in natives:
                raise _damaged(f"function {fn} ({name!r}) calls a native function that no registration holds")
    wrappers = [PythonFunction(func, role, tape._pending) for func, role in callables]
    tape._alive[id(wrappers)] = wrappers  # what every callback slot points into
    defs = ffi.new("pg_fndef[]", len(functions))
    names = [ffi.new("char[]", name.encode()) for name, _, _, _, _ in functions]  # alive until C copies them
    for fn, (_, slots, deriv, base, level) in enumerate(functions):
        entry = defs[fn]
        entry.fn, entry.name, entry.deriv, entry.base, entry.level = -1, names[fn], deriv, base, level
        for order, slot in enumerate(slots):
            if isinstance(slot, int):
                entry.order[order].callback = lib.pg_py_callback
                entry.order[order].ud = wrappers[slot].handle
            elif slot is not None:
                entry.order[order].native = slot
    ids = ffi.new("int[]", len(functions))
    tape._check(lib.pg_fn_define(tape._ptr, defs, len(functions), ids))
    for name, f, df, d2f, fn in registrations:
        tape._functions[(name, id(f), id(df), id(d2f))] = (fn, (name, f, df, d2f))


# ---- pickle and deepcopy --------------------------------------------------------------

def state(tape, for_pickle):
    """The whole tape as plain data; for_pickle refuses what pickle cannot save
    with an error that names the op.

    Another thread may be extending the tape meanwhile (each C call below
    holds the tape, or raises TapeBusyError), so the state is read as a
    prefix that stays consistent: the nodes below a count fixed first (nodes
    below it never change but for leaf values, read in one call), then
    apply's registrations, copied at once, then the function table, which
    only grows and so holds every function those nodes and registrations
    name, each complete (a function is set up before a node calls it or it
    is registered)."""
    arrays = to_arrays(tape, 0, len(tape))
    op = arrays["op"]
    stored = (op == _LEAF) | (op == _CONST)
    # apply's registrations: so that applying the same f again reuses its function
    registrations = [(*spec, fn) for fn, spec in list(tape._functions.values())]
    functions, callables = _function_table(tape, for_pickle)
    return {
        "format": _FORMAT,
        "op": op.tobytes(),
        "a": arrays["a"].astype("<u4").tobytes(),
        "b": arrays["b"].astype("<u4").tobytes(),
        "values": arrays["value"][stored].astype("<f8").tobytes(),  # of leaves and constants
        "names": arrays["names"],
        "functions": functions,
        "callables": callables,
        "registrations": registrations,
    }


def restore(state):
    """A new tape from state().  A state that state() could not have given
    (a damaged or doctored pickle) is refused with an UnpicklingError or
    ValueError that names the problem: every slot of every function must
    call a callable of the state, which the new tape keeps alive."""
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError("not the state of a pyrograd tape of this version")
    missing = _STATE_KEYS - state.keys()
    if missing:
        raise _damaged(f"it has no {', '.join(sorted(missing))}")
    tape = Tape()
    _restore_functions(tape, state["functions"], state["callables"], state["registrations"])
    op = np.frombuffer(state["op"], np.uint8)
    stored = (op == _LEAF) | (op == _CONST)
    value = np.zeros(len(op))
    saved = np.frombuffer(state["values"], "<f8")
    if len(saved) != np.count_nonzero(stored):
        raise ValueError("the pickled tape is damaged: its values do not match its leaves and constants")
    value[stored] = saved
    a = np.frombuffer(state["a"], "<u4").astype(np.uint32, copy=False)
    b = np.frombuffer(state["b"], "<u4").astype(np.uint32, copy=False)
    if len(b) == len(op):  # else extend says what is wrong
        absent = np.flatnonzero((op == _CALL) & (b >= len(state["functions"])))
        if len(absent):
            raise _damaged(f"node {absent[0]} calls function {b[absent[0]]}, which it does not have")
    tape.reserve(len(op))
    extend(tape, op, a, b, value, state["names"])
    return tape
