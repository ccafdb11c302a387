"""Two hot paths of the installed pyrograd, for comparing two builds side by side.

    python bench/ab.py [graph|batch|both] [repeats] [graph nodes] [batch rows]

Run it alternately with each build's Python (say, a venv of the commit before
a change and one of the change), a few rounds, and compare the figures of the
same round.  For a small difference count instructions instead, on smaller
sizes, twice with different repeats so that the setup cancels out:
`valgrind --tool=callgrind python bench/ab.py graph 3 20000` and again with
13 repeats; (Ir of 13 - Ir of 3) / (10 x 20,000) is the instructions a node.

  graph  set a leaf + backprop of bench/'s random graph (1M nodes): ns a node
  batch  grad_batch, one thread, of the 351-node model (20,000 rows): ns a row
"""
import statistics
import sys
import time

import workloads


def timed(call, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def graph(repeats, nodes):
    g = workloads.random_graph(nodes)
    _, leaves, y = workloads.pyrograd_graph(g)
    y.backprop()
    step = iter(range(10**9))

    def sweep():
        leaves[0].set(0.1 + next(step) * 1e-6)
        y.backprop()

    median, best = timed(sweep, repeats)
    print(f"graph: set + backprop, median {median * 1e9 / g.n_nodes:.2f}, min {best * 1e9 / g.n_nodes:.2f} ns/node")


def batch(repeats, rows):
    loss, inputs, params, data = workloads.pyrograd_batch_model(n_rows=rows)
    run = lambda: loss.tape.grad_batch(loss, inputs, data, params, threads=1)  # noqa: E731
    run()
    median, best = timed(run, repeats)
    print(f"batch: grad_batch 1 thread, median {median * 1e9 / len(data):.0f}, min {best * 1e9 / len(data):.0f} ns/row")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    nodes = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    rows = int(sys.argv[4]) if len(sys.argv) > 4 else 20_000
    if which in ("graph", "both"):
        graph(repeats, nodes)
    if which in ("batch", "both"):
        batch(repeats, rows)
