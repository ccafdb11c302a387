"""DOT export: which nodes are drawn, their labels, values, highlight, rankdir."""
import re
import subprocess

import pytest

import pyrograd as pg

NODE = re.compile(r'^\s*(n\d+)\s*\[label="((?:[^"\\]|\\.)*)"(.*)\];\s*$')
EDGE = re.compile(r"^\s*(n\d+)\s*->\s*(n\d+)\s*;\s*$")


def parse(text):
    """(labels by node id, attribute text by node id, set of edges, rankdir)."""
    labels, attrs, edges, rankdir = {}, {}, set(), None
    assert text.lstrip().startswith("digraph")
    assert text.rstrip().endswith("}")
    for line in text.splitlines():
        m = NODE.match(line)
        if m:
            assert m.group(1) not in labels, "a node is declared twice"
            labels[m.group(1)] = m.group(2)
            attrs[m.group(1)] = m.group(3)
            continue
        m = EDGE.match(line)
        if m:
            edges.add((m.group(1), m.group(2)))
            continue
        m = re.search(r"rankdir\s*=\s*\"?(\w+)\"?", line)
        if m:
            rankdir = m.group(1)
    return labels, attrs, edges, rankdir


def first_line(label):
    return label.split("\\n")[0]


def node_of(labels, label):
    matches = [node for node, text in labels.items() if first_line(text) == label]
    assert len(matches) == 1, (label, labels)
    return matches[0]


@pytest.fixture
def graph():
    tape = pg.Tape()
    a, b, c = tape.term("a", 2.0), tape.term("b", 3.0), tape.term("c", 5.0)
    p = a * b
    y = pg.exp(p - a)
    z = c + c  # y does not depend on c
    return tape, a, b, c, p, y, z


def test_term_dot_shows_only_what_it_depends_on(graph):
    tape, a, b, c, p, y, z = graph
    labels, _, edges, _ = parse(y.dot())
    names = {first_line(text) for text in labels.values()}
    assert names == {"a", "b", "*", "-", "exp"}
    assert len(labels) == 5
    na, nb, nmul, nsub, nexp = (node_of(labels, s) for s in ("a", "b", "*", "-", "exp"))
    assert edges == {(na, nmul), (nb, nmul), (nmul, nsub), (na, nsub), (nsub, nexp)}


def test_tape_dot_shows_the_whole_tape(graph):
    tape, a, b, c, p, y, z = graph
    labels, _, edges, _ = parse(tape.dot())
    assert len(labels) == len(tape)
    names = [first_line(text) for text in labels.values()]
    assert sorted(names) == sorted(["a", "b", "c", "*", "-", "exp", "+"])
    nc, nadd = node_of(labels, "c"), node_of(labels, "+")
    assert (nc, nadd) in edges
    assert len(edges) == 6  # distinct edges; c + c may draw its edge twice


def test_op_labels():
    tape = pg.Tape()
    x, w = tape.term("x", 0.5), tape.term("w", 2.0)
    terms = {
        "/": x / w, "pow": x ** w, "max": pg.maximum(x, w), "min": pg.minimum(x, w),
        "neg": -x, "abs": abs(x), "log": pg.log(x), "sqrt": pg.sqrt(x), "sin": pg.sin(x),
        "cos": pg.cos(x), "tan": pg.tan(x), "tanh": pg.tanh(x), "sigmoid": pg.sigmoid(x),
        "relu": pg.relu(x), "softplus": pg.softplus(x),
        "myfun": x.apply("myfun", lambda v: v, lambda v: 1.0),
    }
    for label, term in terms.items():
        labels, _, _, _ = parse(term.dot())
        top = [node for node in labels if node == f"n{term.index}"]
        assert len(top) == 1
        assert first_line(labels[top[0]]) == label, (label, labels)


def test_constants_are_labelled_by_value_or_name():
    tape = pg.Tape()
    x = tape.term("x", 1.0)
    y = x * 2.5 + tape.const(7.0, name="seven")
    labels, _, _, _ = parse(y.dot())
    firsts = {first_line(text) for text in labels.values()}
    assert "2.5" in firsts
    assert "seven" in firsts
    assert "7" not in firsts


def test_show_values_with_precision():
    tape = pg.Tape()
    a, b = tape.term("a", 1.23456789), tape.term("b", 3.0)
    y = a * b
    y.backprop()
    labels, _, _, _ = parse(y.dot(show_values=True, precision=3))
    la = labels[node_of(labels, "a")]
    assert "1.23" in la and "1.235" not in la
    assert "grad = 3" in labels[node_of(labels, "a")]
    assert "grad = 1.23" in labels[node_of(labels, "b")]
    assert "3.7" in labels[node_of(labels, "*")]  # 3.70370367 to 3 digits
    labels6, _, _, _ = parse(y.dot(show_values=True, precision=6))
    assert "1.23457" in labels6[node_of(labels6, "a")]
    plain, _, _, _ = parse(y.dot())
    assert all("\\n" not in text for text in plain.values())
    assert "value" not in y.dot()


def test_show_values_are_current():
    tape = pg.Tape()
    a = tape.term("a", 2.0)
    y = a * a
    assert y.value == 4.0
    a.set(5.0)
    labels, _, _, _ = parse(y.dot(show_values=True))
    assert "value = 25" in labels[node_of(labels, "*")]


def test_highlight_draws_terms_in_red(graph):
    tape, a, b, c, p, y, z = graph
    _, attrs, _, _ = parse(y.dot(highlight={p, a}))
    red = {node for node, text in attrs.items() if "red" in text}
    assert red == {f"n{p.index}", f"n{a.index}"}
    _, attrs, _, _ = parse(tape.dot())
    assert not any("red" in text for text in attrs.values())


def test_rankdir(graph):
    tape, *_, y, z = graph
    assert parse(y.dot())[3] == "LR"
    assert parse(tape.dot())[3] == "LR"
    assert parse(y.dot(rankdir="TB"))[3] == "TB"
    assert parse(tape.dot(rankdir="TB"))[3] == "TB"
    for bad in ("XY", "lr", "", None, 3):
        with pytest.raises(ValueError):
            y.dot(rankdir=bad)
        with pytest.raises(ValueError):
            tape.dot(rankdir=bad)


def test_highlight_from_another_tape_is_an_error(graph):
    tape, *_, y, z = graph
    other = pg.Tape().term("o", 1.0)
    with pytest.raises(ValueError):
        y.dot(highlight={other})


def test_empty_tape():
    labels, _, edges, rankdir = parse(pg.Tape().dot())
    assert labels == {} and edges == set() and rankdir == "LR"


def _graphviz_accepts(dot_program, text):
    result = subprocess.run([dot_program, "-Tsvg"], input=text.encode(), capture_output=True)
    return result.returncode == 0 and b"<svg" in result.stdout, result.stderr.decode()


def test_dot_text_parses_with_graphviz(dot_program, graph):
    tape, a, b, c, p, y, z = graph
    y.backprop()
    for text in (y.dot(), tape.dot(), y.dot(show_values=True, precision=2, highlight={a}),
                 tape.dot(rankdir="TB", show_values=True)):
        ok, err = _graphviz_accepts(dot_program, text)
        assert ok, err


def test_awkward_names_parse_with_graphviz(dot_program):
    tape = pg.Tape()
    names = ['quote"d', "back\\slash", "trailing\\", "new\nline", "{braces} <angle> |bar|", "θ"]
    terms = [tape.term(name, 1.0) for name in names]
    y = terms[0]
    for t in terms[1:]:
        y = y + t
    ok, err = _graphviz_accepts(dot_program, y.dot(show_values=True))
    assert ok, err
    svg = subprocess.run([dot_program, "-Tsvg"], input=y.dot().encode(), capture_output=True).stdout
    assert b"quote&quot;d" in svg or b'quote"d' in svg
