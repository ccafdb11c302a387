"""The tape and its terms: rustograd's example, structure, derive and backprop."""
import math
import threading

import pytest

import pyrograd as pg
from _pyrograd_core import lib


def test_rustograd_readme_example():
    tape = pg.Tape()
    a = tape.term("a", 123.0)
    b = tape.term("b", 321.0)
    c = tape.term("c", 42.0)
    y = (a + b) * c
    assert y.value == 18648.0
    assert y.eval() == 18648.0
    assert y.derive(a) == 42.0
    assert y.derive(b) == 42.0
    assert y.derive(c) == 444.0
    y.backprop()
    assert (a.grad, b.grad, c.grad) == (42.0, 42.0, 444.0)
    assert y.grad == 1.0


def test_rustograd_example_after_set():
    tape = pg.Tape()
    a, b, c = tape.term("a", 123.0), tape.term("b", 321.0), tape.term("c", 42.0)
    s = a + b
    y = s * c
    assert y.value == 18648.0
    a.set(1.0)
    c.set(2.0)
    assert s.value == 322.0
    assert y.value == 644.0
    assert y.derive(c) == 322.0
    y.backprop()
    assert (a.grad, b.grad, c.grad, s.grad) == (2.0, 2.0, 322.0, 2.0)


def test_names_and_tape():
    tape = pg.Tape()
    a = tape.term("a", 1.0)
    anonymous = tape.term()
    k = tape.const(3.0, "k")
    y = a * k
    assert a.name == "a"
    assert anonymous.name is None
    assert anonymous.value == 0.0
    assert k.name == "k"
    assert y.name is None
    assert y.tape is tape and a.tape is tape
    assert a.is_leaf and anonymous.is_leaf
    assert not k.is_leaf and not y.is_leaf


def test_unicode_names_round_trip():
    tape = pg.Tape()
    name = "θ₁ \"quoted\" \\ back"
    assert tape.term(name, 1.0).name == name


def test_len_counts_nodes():
    tape = pg.Tape()
    assert len(tape) == 0
    a, b = tape.term("a", 1.0), tape.term("b", 2.0)
    assert len(tape) == 2
    a * b
    assert len(tape) == 3
    pg.exp(a)
    assert len(tape) == 4
    before = len(tape)
    a + 1.0
    assert len(tape) > before


def test_derive_by_itself_and_by_later_nodes():
    tape = pg.Tape()
    a = tape.term("a", 2.0)
    y = a * a
    b = tape.term("b", 5.0)
    assert y.derive(y) == 1.0
    assert a.derive(a) == 1.0
    assert y.derive(b) == 0.0  # b was built after y
    assert a.derive(y) == 0.0
    assert (y * b).derive(b) == 4.0


def test_derive_by_an_intermediate_node_matches_its_adjoint():
    tape = pg.Tape()
    a, b = tape.term("a", 0.3), tape.term("b", -1.1)
    u = a * b
    v = pg.sin(u) + a
    y = v * u + pg.exp(v)
    y.backprop()
    for node in (u, v, a, b):
        assert math.isclose(y.derive(node), node.grad, rel_tol=1e-12, abs_tol=1e-14)
    # by hand: dy/dv = u + exp(v)
    assert math.isclose(v.grad, u.value + math.exp(v.value), rel_tol=1e-14)


def test_backprop_gives_zero_for_independent_and_later_terms():
    tape = pg.Tape()
    a, b, unrelated = tape.term("a", 2.0), tape.term("b", 3.0), tape.term("u", 7.0)
    side = unrelated * unrelated
    y = a * b
    later = y * 2 + a
    y.backprop()
    assert (a.grad, b.grad) == (3.0, 2.0)
    assert unrelated.grad == 0.0
    assert side.grad == 0.0
    assert later.grad == 0.0
    assert y.grad == 1.0
    # a term built after the backprop has no grad yet
    assert (a * 5).grad == 0.0


def test_unused_infinite_local_derivatives_do_not_leak():
    tape = pg.Tape()
    x = tape.term("x", 0.0)
    w = tape.term("w", 2.0)
    z = pg.log(x)  # local derivative 1/0 = inf, but y does not use z
    r = pg.sqrt(x)  # likewise 0.5 / 0
    y = x * w + 1
    z2 = pg.log(x) * w  # built after y
    assert z.value == -math.inf
    y.backprop()
    assert (x.grad, w.grad) == (2.0, 0.0)
    assert (z.grad, r.grad, z2.grad) == (0.0, 0.0, 0.0)
    assert y.derive(x) == 2.0
    assert y.derive(w) == 0.0


def test_grad_before_any_backprop_is_zero():
    tape = pg.Tape()
    a = tape.term("a", 2.0)
    y = a * a
    assert a.grad == 0.0 and y.grad == 0.0


def test_backprop_from_another_output_replaces_grads():
    tape = pg.Tape()
    a, b = tape.term("a", 2.0), tape.term("b", 3.0)
    y = a * b
    z = a + a
    y.backprop()
    assert (a.grad, b.grad) == (3.0, 2.0)
    z.backprop()
    assert (a.grad, b.grad, y.grad) == (2.0, 0.0, 0.0)
    y.backprop()
    y.backprop()  # twice: grads are not accumulated across calls
    assert (a.grad, b.grad) == (3.0, 2.0)


def test_shared_subexpressions_are_linear_not_exponential():
    # y_{k+1} = y_k * 0.5 + y_k * 0.5: each level uses the one below twice,
    # so a recursive derive would make 2**200 calls.
    tape = pg.Tape()
    a = tape.term("a", 1.25)
    y = a
    for _ in range(200):
        y = y * 0.5 + y * 0.5
    assert y.value == 1.25
    assert y.derive(a) == 1.0
    y.backprop()
    assert a.grad == 1.0
    a.set(-3.0)
    assert y.value == -3.0


def test_fan_out_accumulates():
    tape = pg.Tape()
    a = tape.term("a", 1.5)
    terms = [a * k for k in range(1, 101)]
    y = terms[0]
    for t in terms[1:]:
        y = y + t
    assert y.value == 1.5 * 5050
    assert y.derive(a) == 5050.0
    y.backprop()
    assert a.grad == 5050.0


def test_terms_from_one_tape_are_independent_of_other_tapes():
    t1, t2 = pg.Tape(), pg.Tape()
    a1, a2 = t1.term("a", 1.0), t2.term("a", 10.0)
    y1, y2 = a1 * 3, a2 * 5
    a1.set(2.0)
    assert (y1.value, y2.value) == (6.0, 50.0)
    y2.backprop()
    assert a1.grad == 0.0 and a2.grad == 5.0


def test_term_equality_and_hash():
    tape = pg.Tape()
    a = tape.term("a", 1.0)
    b = tape.term("b", 1.0)
    assert a == a and a != b
    assert len({a, b, a}) == 2


def test_repr_does_not_fail():
    tape = pg.Tape()
    a = tape.term("a", 1.5)
    assert "a" in repr(a)
    assert "1.5" in repr(a)
    assert repr(tape)


def test_memory_is_at_most_32_bytes_per_node():
    tape = pg.Tape()
    empty = tape.memory
    assert lib.pg_reserve(tape._ptr, 1_000_000) == lib.PG_OK
    per_node = (tape.memory - empty) / 1_000_000
    assert per_node <= 32
    # names are stored only for named nodes
    x = tape.term(None, 1.0)
    y = tape.term("named", 1.0)
    assert x.name is None and y.name == "named"


@pytest.mark.parametrize("depth", [100_000])
def test_deep_chain_of_functions(depth):
    # deep enough to overflow a C stack if any sweep recursed
    tape = pg.Tape()
    x = tape.term("x", 0.3)
    y = x
    for _ in range(depth):
        y = pg.sin(y)
    ref, d = 0.3, 1.0
    for _ in range(depth):
        d *= math.cos(ref)
        ref = math.sin(ref)
    assert math.isclose(y.value, ref, rel_tol=1e-12)
    assert math.isclose(y.derive(x), d, rel_tol=1e-9)
    y.backprop()
    assert math.isclose(x.grad, d, rel_tol=1e-9)


def test_separate_tapes_in_separate_threads():
    results, errors = {}, []

    def work(k):
        try:
            tape = pg.Tape()
            x = tape.term("x", 0.0)
            a = tape.term("a", float(k))
            y = x
            for _ in range(50_000):
                y = y + a
            for j in range(20):
                a.set(float(k + j))
                assert y.value == 50_000 * (k + j)
                y.backprop()
                assert a.grad == 50_000.0
            results[k] = y.derive(a)
        except Exception as error:  # reported below, in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {k: 50_000.0 for k in range(4)}
