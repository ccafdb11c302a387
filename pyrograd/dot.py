"""Graphviz DOT export: a picture of the tape, rustograd style.

One box per node, labelled with its name (or its op, or a constant's value),
optionally with value and grad; arrows run from operands to results.
"""
import numpy as np

from ._binding import OP_ARITY, OP_LABELS, OPS, ffi, lib

_CONST, _CALL = OPS["const"], OPS["call"]


def to_dot(tape, root=None, show_values=False, precision=4, highlight=(), rankdir="LR",
           _values_known=None, _grads_known=None):
    """DOT text of `tape`, or only of what Term `root` depends on.

    show_values  also print each node's value and grad (from the last backprop)
    precision    significant digits of printed numbers
    highlight    terms drawn in red (e.g. the node an animation is at)
    rankdir      "LR" (left to right) or "TB" (top to bottom)

    _values_known and _grads_known are for pyrograd.pictures.animate: with
    show_values, only the nodes (indices) in them print their value or grad,
    the others an empty "value =" or "grad =", as if not computed yet.
    """
    if rankdir not in ("LR", "TB"):
        raise ValueError(f"rankdir must be 'LR' or 'TB', not {rankdir!r}")
    if not isinstance(precision, int) or precision < 1:
        raise ValueError(f"precision must be a positive int, not {precision!r}")
    nodes, ops, a, b, arity = _graph(tape, root)

    values = grads = None
    if show_values and len(nodes):
        values = np.empty(len(nodes))
        grads = np.empty(len(nodes))
        idx = ffi.from_buffer("uint32_t[]", nodes)
        tape._check(lib.pg_values(tape._ptr, idx, len(nodes), ffi.from_buffer("double[]", values)))
        tape._check(lib.pg_grads(tape._ptr, idx, len(nodes), ffi.from_buffer("double[]", grads)))
    red = set()
    for term in highlight:
        if getattr(term, "tape", None) is not tape:
            raise ValueError("highlight takes terms of the tape being drawn")
        red.add(term.index)

    def number(x):
        return f"{x:.{precision}g}"

    lines = ["digraph pyrograd {", f"  rankdir={rankdir};", '  node [shape=box, fontname="Helvetica"];']
    for k, i in enumerate(nodes.tolist()):
        label = _label(tape, i, ops[i], b[i], number, values[k] if values is not None else None)
        if values is not None:
            value = number(values[k]) if _values_known is None or i in _values_known else ""
            grad = number(grads[k]) if _grads_known is None or i in _grads_known else ""
            label += f"\\nvalue = {value}\\ngrad = {grad}"
        style = ', color="red", fontcolor="red", penwidth=2' if i in red else ""
        lines.append(f'  n{i} [label="{label}"{style}];')
    for i in nodes.tolist():
        for operand in (a[i], b[i])[: arity[i]]:
            lines.append(f"  n{operand} -> n{i};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def drawn_nodes(tape, root=None):
    """The indices of the nodes to_dot(tape, root) draws, in tape order."""
    return _graph(tape, root)[0]


def _graph(tape, root):
    """(nodes drawn, and for every node up to root: op, operands, arity)."""
    n = len(tape) if root is None else root.index + 1
    ops = np.empty(n, np.uint8)
    a = np.empty(n, np.uint32)
    b = np.empty(n, np.uint32)
    tape._check(lib.pg_export(tape._ptr, 0, n, ffi.from_buffer("uint8_t[]", ops),
                              ffi.from_buffer("uint32_t[]", a), ffi.from_buffer("uint32_t[]", b)))
    arity = np.asarray(OP_ARITY)[ops]
    shown = _reachable(root, a, b, arity) if root is not None else np.ones(n, bool)
    return np.flatnonzero(shown).astype(np.uint32), ops, a, b, arity


def _reachable(root, a, b, arity):
    """Marks the nodes `root` depends on, walking down the tape once."""
    shown = np.zeros(len(a), bool)
    shown[root.index] = True
    for i in range(root.index, -1, -1):
        if shown[i]:
            if arity[i] >= 1:
                shown[a[i]] = True
            if arity[i] == 2:
                shown[b[i]] = True
    return shown


def _label(tape, i, op, aux, number, value):
    name = ffi.new("char **")
    tape._check(lib.pg_name(tape._ptr, i, name))
    if name[0] != ffi.NULL:
        text = ffi.string(name[0]).decode()
    elif op == _CONST:
        text = number(value if value is not None else tape._term(i).value)
    elif op == _CALL:
        tape._check(lib.pg_fn_name(tape._ptr, int(aux), name))
        text = ffi.string(name[0]).decode()
    else:
        text = OP_LABELS[op]
    return text.replace("\\", "\\\\").replace('"', '\\"')
