"""pytest-benchmark suites for pyrograd's core workloads (built in workloads.py).

The default test run covers tests/ only; run these with

    pytest bench/ --benchmark-only

Peers (micrograd, CasADi) are benchmarked beside pyrograd where installed and
skipped where not. Groups put each pyrograd benchmark next to its peer.
"""

import pytest

import pyrograd as pg
import workloads

NODE_OPS = 20_000
GRAPH_NODES = 1_000_000
CHAIN_NODES = 1_000_000


@pytest.fixture(scope="module")
def graph():
    return workloads.random_graph(GRAPH_NODES)


@pytest.mark.benchmark(group="node build")
def test_node_build_pyrograd(benchmark):
    benchmark(workloads.pyrograd_chain, NODE_OPS)


@pytest.mark.benchmark(group="node build")
def test_node_build_micrograd(benchmark):
    pytest.importorskip("micrograd")
    benchmark(workloads.micrograd_chain, NODE_OPS)


@pytest.mark.benchmark(group="random graph 1M: evaluate + gradient")
def test_random_graph_pyrograd(benchmark, graph):
    _, leaves, y = workloads.pyrograd_graph(graph)
    benchmark(workloads.pyrograd_sweep(leaves[0], y))


@pytest.mark.benchmark(group="random graph 1M: evaluate + gradient")
def test_random_graph_casadi(benchmark, graph):
    pytest.importorskip("casadi")
    benchmark(workloads.casadi_sweep(workloads.casadi_graph(graph), graph))


@pytest.mark.benchmark(group="derive on a 1M chain")
def test_derive_chain_pyrograd(benchmark):
    x, z = workloads.pyrograd_chain(CHAIN_NODES)
    benchmark(z.derive, x)


# Does a dedicated opcode pay over a native function pointer in the function table?
@pytest.mark.benchmark(group="sin chain 1M: set + backprop")
def test_sin_chain_builtin(benchmark):
    x, y = workloads.pyrograd_sin_chain(CHAIN_NODES, pg.sin)
    benchmark(workloads.pyrograd_sweep(x, y))


@pytest.mark.benchmark(group="sin chain 1M: set + backprop")
def test_sin_chain_apply_native(benchmark):
    x, y = workloads.pyrograd_sin_chain(CHAIN_NODES, workloads.libm_sin())
    benchmark(workloads.pyrograd_sweep(x, y))


@pytest.mark.benchmark(group="curve fit")
@pytest.mark.parametrize("fit", [workloads.curve_fit_pyrograd_loop,
                                 workloads.curve_fit_pyrograd_epochs,
                                 workloads.curve_fit_pyrograd_run], ids=["loop", "epochs", "run"])
def test_curve_fit(benchmark, fit):
    assert workloads.curve_fit_ok(benchmark(fit))


@pytest.mark.benchmark(group="grad_batch 100k rows")
@pytest.mark.parametrize("threads", [1, 2])
def test_grad_batch_threads(benchmark, threads):
    loss, inputs, params, data = workloads.pyrograd_batch_model()
    benchmark(loss.tape.grad_batch, loss, inputs, data, params, threads=threads)
