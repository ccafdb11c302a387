"""A failing user function takes away only the values that depend on it.

Reading a node fails exactly when it depends on a call that fails; every
other node, built before or after, reads, differentiates and batches as if
nothing had failed; reading a failed node again calls the function again.
"""
import math
import random

import numpy as np
import pytest

import pyrograd as pg


class Boom(Exception):
    pass


def mlog(v):
    return math.log(v)  # ValueError: math domain error for v <= 0


def test_a_new_leaf_after_a_failing_function_reads():
    # The program: a failed apply made every later node unreadable.
    t = pg.Tape()
    x = t.term("x", -1.0)
    y = x.apply("mlog", mlog, lambda v: 1 / v)
    z = t.term("z", 5.0)
    assert z.value == 5.0
    with pytest.raises(ValueError, match="math domain error"):
        y.value
    assert z.value == 5.0
    assert (z * 2).value == 10.0


def test_independent_nodes_read_in_every_way():
    t = pg.Tape()
    x, w = t.term("x", -1.0), t.term("w", 3.0)
    failed = x.apply("mlog", mlog, lambda v: 1 / v)
    out = pg.tanh(w * 2 + x)  # uses x, not the failed node
    with pytest.raises(ValueError):
        failed.value
    assert out.value == math.tanh(5.0)
    assert out.derive(w) == pytest.approx(2 * (1 - math.tanh(5.0) ** 2))
    out.backprop()
    assert w.grad == pytest.approx(2 * (1 - math.tanh(5.0) ** 2))
    assert failed.grad == 0.0
    assert t.values([out, w]).tolist() == [math.tanh(5.0), 3.0]
    data = np.array([[1.0], [2.0]])
    assert t.eval_batch(out, [w], data).tolist() == [math.tanh(1.0), math.tanh(3.0)]
    loss, grads = t.grad_batch(out, [x], data, [w], threads=1)  # rows set x to 1 and 2
    assert loss == pytest.approx(math.tanh(7.0) + math.tanh(8.0))
    with pytest.raises(ValueError):
        t.values([out, failed])
    with pytest.raises(ValueError):
        (failed + out).backprop()


def test_dependents_fail_and_each_read_calls_the_function_again():
    t = pg.Tape()
    x = t.term("x", -1.0)
    calls = []

    def f(v):
        calls.append(v)
        return math.log(v)

    y = x.apply("f", f, lambda v: 1 / v)
    above = y * 2 + 1
    for k in range(1, 4):
        with pytest.raises(ValueError):
            above.value
        assert len(calls) == k  # once a read, not twice
    with pytest.raises(ValueError):
        above.backprop()
    with pytest.raises(ValueError):
        above.derive(x)
    x.set(math.e)
    assert above.value == pytest.approx(3.0)
    above.backprop()
    assert x.grad == pytest.approx(2 / math.e)


def test_a_function_that_succeeds_on_retry():
    t = pg.Tape()
    x = t.term("x", 2.0)
    state = {"fail": True}

    def f(v):
        if state["fail"]:
            raise Boom("not yet")
        return v * 10

    y = x.apply("f", f, lambda v: 10.0)
    z = y + 1
    with pytest.raises(Boom):
        z.value
    state["fail"] = False  # no set(): reading again calls f again
    assert z.value == 21.0
    assert y.value == 20.0
    z.backprop()
    assert x.grad == 10.0


def test_the_lowest_failure_a_node_depends_on_is_reported():
    t = pg.Tape()
    x = t.term("x", 1.0)

    class First(Exception):
        pass

    class Second(Exception):
        pass

    def first(v):
        raise First()

    def second(v):
        raise Second()

    a = x.apply("first", first, None)
    b = x.apply("second", second, None)
    with pytest.raises(Second):
        (b * 2).value
    with pytest.raises(First):
        (b + a).value
    with pytest.raises(First):
        (a + b).value
    assert (x * 3).value == 3.0


def test_a_reentrant_call_fails_only_its_dependents():
    t = pg.Tape()
    x = t.term("x", 1.0)

    def reenter(v):
        return x.value  # the tape is busy evaluating: TapeBusyError

    y = x.apply("reenter", reenter, None)
    z = x + 1
    with pytest.raises(pg.TapeBusyError):
        y.value
    assert z.value == 2.0
    with pytest.raises(pg.TapeBusyError):
        (y + z).value


def test_failures_across_chunks_of_a_long_tape():
    # Scalar sweeps run in chunks of 65536 nodes; failures carry across them.
    t = pg.Tape()
    x = t.term("x", -1.0)
    failed = x.apply("mlog", mlog, lambda v: 1 / v)
    independent, dependent = x, failed
    for _ in range(100_000):
        independent = independent + 1.0
        dependent = dependent + 1.0
    assert independent.value == 99_999.0
    with pytest.raises(ValueError):
        dependent.value
    independent.backprop()
    assert x.grad == 1.0
    x.set(1.0)
    assert dependent.value == 100_000.0
    assert independent.value == 100_001.0


def test_set_below_a_failed_node_evaluates_it_again():
    t = pg.Tape()
    x = t.term("x", -1.0)
    y = x.apply("mlog", mlog, lambda v: 1 / v) + x
    with pytest.raises(ValueError):
        y.value
    t.set_values([x], np.array([1.0]))
    assert y.value == 1.0
    x.set(-2.0)
    with pytest.raises(ValueError):
        y.value
    x.set(1.0)
    assert y.value == 1.0


def test_derive_past_failed_nodes_never_calls_their_derivative():
    t = pg.Tape()
    x = t.term("x", -1.0)
    seen = []

    def df(v):
        seen.append(v)
        return 1 / v

    x.apply("mlog", mlog, df)
    out = x * x
    with pytest.raises(ValueError):
        t[1].value
    assert out.derive(x) == -2.0
    assert seen == []  # never called at NaN for a node out does not depend on


def _random_program(rng, n_nodes):
    """A random graph with user functions that fail on negative input."""
    t = pg.Tape()
    leaves = [t.term(f"x{k}", rng.uniform(-1, 1)) for k in range(3)]
    nodes = list(leaves)
    fails = lambda v: v < 0  # noqa: E731

    def f(v):
        if fails(v):
            raise Boom(v)
        return math.sqrt(v)

    spec = []  # (kind, a, b) by position in nodes
    for _ in range(n_nodes):
        kind = rng.choice(["add", "mul", "call", "tanh", "leaf"])
        a, b = rng.randrange(len(nodes)), rng.randrange(len(nodes))
        if kind == "add":
            nodes.append(nodes[a] + nodes[b])
        elif kind == "mul":
            nodes.append(nodes[a] * nodes[b])
        elif kind == "tanh":
            nodes.append(pg.tanh(nodes[a]))
        elif kind == "call":
            nodes.append(nodes[a].apply("f", f, None))
        else:
            nodes.append(t.term(None, rng.uniform(-1, 1)))
        spec.append((kind, a, b))
    return t, leaves, nodes, spec, fails


def _reference(leaves, nodes, spec, fails):
    """(value or None for failed) of every node, in plain Python."""
    ref = [leaf.value for leaf in leaves]
    for (kind, a, b), node in zip(spec, nodes[len(leaves):]):
        x, y = ref[a], ref[b]
        if kind == "leaf":
            ref.append(node.value)
        elif x is None or (kind in ("add", "mul") and y is None):
            ref.append(None)
        elif kind == "add":
            ref.append(x + y)
        elif kind == "mul":
            ref.append(x * y)
        elif kind == "tanh":
            ref.append(math.tanh(x))
        else:
            ref.append(None if fails(x) else math.sqrt(x))
    return ref


@pytest.mark.parametrize("seed", range(20))
def test_random_programs_fail_exactly_where_they_depend_on_a_failure(seed):
    rng = random.Random(seed)
    t, leaves, nodes, spec, fails = _random_program(rng, 60)
    order = list(range(len(nodes)))
    for _round in range(3):
        ref = _reference(leaves, nodes, spec, fails)
        rng.shuffle(order)
        for k in order:
            if ref[k] is None:
                with pytest.raises(Boom):
                    nodes[k].value
            else:
                assert nodes[k].value == pytest.approx(ref[k], rel=1e-12, abs=1e-300)
        leaves[rng.randrange(3)].set(rng.uniform(-1, 1))


def _parked_exception_is_forgotten(read):
    """Fails f once, then reads with `read`; True when the exception f raised
    is no longer referenced afterwards."""
    import gc
    import weakref

    t = pg.Tape()
    x = t.term("x", 1.0)
    state = {"fail": True, "raised": None}

    def f(v):
        if state["fail"]:
            state["fail"] = False
            error = Boom()
            state["raised"] = weakref.ref(error)
            raise error
        return v

    y = x.apply("f", f, None)
    independent = x * 2
    read(t, x, y, independent)
    gc.collect()
    return state["raised"] is not None and state["raised"]() is None


def _fail_then_retry(t, x, y, independent):
    try:
        y.value
    except Boom:
        pass
    assert y.value == 1.0


def _fail_where_not_needed(t, x, y, independent):
    # y's function runs (and fails) in the sweep up to `independent`, which
    # does not need it: the call succeeds and its exception must not linger.
    assert independent.value == 2.0


@pytest.mark.parametrize("read", [_fail_then_retry, _fail_where_not_needed])
def test_no_parked_exception_outlives_its_call(read):
    assert _parked_exception_is_forgotten(read)


def test_no_parked_exception_outlives_a_derive_that_did_not_need_it():
    # derive sweeps tangents over every node between x and y, then again over
    # the ones y needs when a derivative failed in a node y does not need.
    import gc
    import weakref

    t = pg.Tape()
    x = t.term("x", 1.0)
    raised = []

    def df(v):
        error = Boom()
        raised.append(weakref.ref(error))
        raise error

    x.apply("f", lambda v: v, df)
    y = x * 2
    assert y.derive(x) == 2.0
    gc.collect()
    assert raised and raised[0]() is None


def test_out_of_memory_while_marking_failures():
    # Marking a failed node and recording its failure allocate: each injected
    # allocation failure is a MemoryError, after which the tape reads right.
    from test_alloc_failure import FailingAllocator

    for k in range(1, 6):
        allocator = FailingAllocator()
        t = pg.Tape._with_allocator(allocator.callback)
        x = t.term("x", -1.0)
        y = x.apply("mlog", mlog, None)
        z = x + 3.0
        allocator.arm(k)
        try:
            assert z.value == 2.0
        except MemoryError:
            assert allocator.failed
        allocator.disarm()
        assert z.value == 2.0
        with pytest.raises(ValueError):
            y.value
        x.set(1.0)
        assert (y + z).value == 4.0


def test_no_parked_exception_of_a_batch_thread_outlives_its_call():
    # On two threads both halves of a batch fail; the first half's failure
    # is raised, and the other thread's exception must not stay referenced.
    import gc
    import weakref

    t = pg.Tape()
    x = t.term("x", 0.0)
    raised = []

    def f(v):
        error = Boom(v)
        raised.append(weakref.ref(error))
        raise error

    y = x.apply("f", f, None)
    rows = np.linspace(1.0, 2.0, 1000).reshape(-1, 1)
    with pytest.raises(Boom):
        t.eval_batch(y, [x], rows, threads=2)
    gc.collect()
    assert len(raised) >= 2  # both threads failed
    assert all(ref() is None for ref in raised)
