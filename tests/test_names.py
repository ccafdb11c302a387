"""Names of nodes and functions: whole UTF-8 characters, and no NUL inside."""
import copy
import math
import pickle

import pytest

import pyrograd as pg


def _sin(x):
    return math.sin(x)


def _cos(x):
    return math.cos(x)


def _neg_sin(x):
    return -math.sin(x)


def _neg_cos(x):
    return -math.cos(x)


# Derivative functions are named f' and are cut at 200 bytes: an odd number
# of ASCII bytes before two-byte characters puts byte 200 inside one.
@pytest.mark.parametrize("name", ["a" + "é" * 150, "a" + "€" * 100, "a" + "😀" * 60],
                         ids=["2-byte", "3-byte", "4-byte"])
def test_long_multibyte_names_survive_grad_pickle_deepcopy_and_dot(name):
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    # Derivatives to any order (each a function named after the last, plus ')...
    chain = pg.unary(name + "c", _cos, pg.unary(name + "s", _neg_sin, pg.unary(name + "n", _neg_cos, _sin)))
    y = x.apply(name, _sin, chain)
    # ... and to the second (the tape names them f' and f'')
    z = x.apply(name, _sin, _cos, _neg_sin)
    dy, dz = [y], [z]
    for order in range(4):
        dy.append(pg.grad(dy[-1], x))
    for order in range(2):
        dz.append(pg.grad(dz[-1], x))
    expected = [math.sin(0.5), math.cos(0.5), -math.sin(0.5), -math.cos(0.5), math.sin(0.5)]
    assert [d.value for d in dy] == pytest.approx(expected)
    assert [d.value for d in dz] == pytest.approx(expected[:3])

    for copied in (pickle.loads(pickle.dumps(tape)), copy.deepcopy(tape)):
        assert len(copied) == len(tape)
        assert [copied[d.index].value for d in dy + dz] == [d.value for d in dy + dz]
        assert pg.grad(copied[dz[1].index], copied[x.index]).value == dz[2].value
    assert name in tape.dot()
    assert name[:40] in dz[2].dot()  # f'', named after a cut f


def test_derivative_names_are_cut_at_a_character_boundary():
    name = "a" + "é" * 150  # byte 200 is inside an é
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    pg.grad(pg.grad(x.apply(name, _sin, _cos, _neg_sin), x), x)
    table, _ = pg.bulk._function_table(tape, for_pickle=True)
    assert [entry[0] for entry in table] == [name, name.encode()[:199].decode() + "'",
                                             name.encode()[:199].decode() + "''"]


def test_a_message_cut_short_ends_with_a_whole_character():
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    y = x.apply("ab" + "é" * 300, _sin, None)  # byte 255 of the message is inside an é
    with pytest.raises(pg.DerivativeError) as error:
        y.derive(x)
    assert "\ufffd" not in str(error.value)
    assert str(error.value).startswith("function 'abé")


@pytest.mark.parametrize("make", [
    lambda tape: tape.term("a\0b"),
    lambda tape: tape.term("\0"),
    lambda tape: tape.const(1.0, "k\0"),
    lambda tape: tape.term("x").apply("f\0g", _sin, _cos),
    lambda tape: pg.unary("u\0", _sin, _cos),
    lambda tape: tape.term("x").apply("f", _sin, pg.unary("df\0", _cos, _neg_sin)),
    lambda tape: tape.extend(["leaf"], names={0: "n\0"}),
])
def test_a_nul_in_a_name_is_refused_everywhere(make):
    tape = pg.Tape()
    before = len(tape)
    with pytest.raises(ValueError, match="NUL"):
        make(tape)
    assert len(tape) <= before + 1  # at most the leaf the call was made on


def test_names_without_nul_still_work():
    tape = pg.Tape()
    a = tape.term("ä", 1.0)
    k = tape.const(2.0, "κ")
    y = (a * k).apply("σ", _sin, _cos)
    assert a.name == "ä" and k.name == "κ"
    assert pickle.loads(pickle.dumps(y)).value == y.value
