"""pyrograd against its peers: every workload, every installed peer, one process, one table.

    python bench/compare.py                      # full sizes (about a minute)
    python bench/compare.py --quick              # small sizes, few repeats: a smoke test
    python bench/compare.py --only random-graph  # one workload

Times are medians over repeats; "x pyrograd" is each row's time over the
first row of its workload, so a peer above 1 is slower than pyrograd.
Exits with status 1 if any check or run failed.
"""

import argparse
import datetime
import gc
import importlib.metadata
import importlib.util
import itertools
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np

import workloads

FULL = dict(node_ops=100_000, graph_nodes=1_000_000, chain_nodes=1_000_000,
            batch_rows=100_000, moons_steps=100, repeats=7, min_seconds=0.2)
QUICK = dict(node_ops=10_000, graph_nodes=20_000, chain_nodes=20_000,
             batch_rows=2_000, moons_steps=10, repeats=3, min_seconds=0.02)

UNITS = {"ns/op": 1e9, "ns/node": 1e9, "ns/row": 1e9, "ms/fit": 1e3, "ms/step": 1e3}
GRAPH_TOLERANCE = 1e-9


@dataclass
class Row:
    workload: str
    implementation: str
    version: str
    seconds: float = math.nan  # per unit of work
    unit: str = ""
    note: str = ""


def installed(package):
    return importlib.util.find_spec(package) is not None


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def cc_version():
    """The first line of `cc --version`, or None without a C compiler."""
    try:
        out = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return None
    return out.splitlines()[0]


def loops_for(fn, min_seconds):
    """How many calls of fn last about min_seconds, after a warm-up call."""
    fn()
    start = time.perf_counter()
    fn()
    return max(1, math.ceil(min_seconds / (time.perf_counter() - start)))


def seconds_per_call(fn, loops, collect):
    """One repeat: loops calls of fn.

    As timeit does, the garbage collector is off while the clock runs, unless
    collect; results are kept until it stops, so freeing them is not timed.
    """
    kept = []
    gc.collect()
    if not collect:
        gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(loops):
            kept.append(fn())
        return (time.perf_counter() - start) / loops
    finally:
        gc.enable()


@dataclass
class Entry:
    """One implementation of a workload: setup() returns (the callable to time, a note)."""
    implementation: str
    package: str  # the row says "not installed" if it cannot be imported
    setup: Callable
    collect: bool = False  # garbage collector on while timed
    version: Optional[str] = None  # shown instead of the package's


class Suite:
    """Runs the implementations of each workload and collects the table's rows."""

    def __init__(self, sizes):
        self.sizes = sizes
        self.rows = []
        self.failed = False

    def run(self, workload, per, unit, entries, per_call=None):
        """Median time per unit of work of each entry's callable, which does `per` units
        (or per_call[implementation] units, for an entry that does more a call).

        Repeats go round-robin over the entries, so a busy spell on the machine
        slows them all alike and their ratios hold.
        """
        timed = []  # (row, callable, loops per repeat, seconds of each repeat)
        for entry in entries:
            row = Row(workload, entry.implementation,
                      entry.version or version(entry.package), unit=unit)
            self.rows.append(row)
            if not installed(entry.package):
                row.note = "not installed"
                continue
            print(f"  {workload}: {entry.implementation} ...", flush=True)
            try:
                fn, row.note = entry.setup()
                loops = loops_for(fn, self.sizes["min_seconds"])
            except Exception as error:  # one broken row must not hide the others
                row.note = f"error: {type(error).__name__}: {error}"
                self.failed = True
                continue
            timed.append((row, partial(seconds_per_call, fn, loops, entry.collect), []))

        for _ in range(self.sizes["repeats"]):
            for _, repeat, times in timed:
                times.append(repeat())
        for row, _, times in timed:
            row.seconds = statistics.median(times) / (per_call or {}).get(row.implementation, per)

    def fail(self, message):
        print(f"  FAILED: {message}", flush=True)
        self.failed = True


def node_build(suite):
    """Building nodes from Python, garbage collector on as in real use: micrograd's
    closures make reference cycles, and collecting them is part of its cost."""
    n_ops = suite.sizes["node_ops"]

    def pyrograd():
        return partial(workloads.pyrograd_chain, n_ops), f"z = z * x + y, {n_ops:,} operators"

    def micrograd(note):
        return partial(workloads.micrograd_chain, n_ops), note

    suite.run("node build", n_ops, "ns/op", [
        Entry("pyrograd", "pyrograd", pyrograd, collect=True),
        Entry("micrograd Value", "micrograd", partial(micrograd, "gc on"), collect=True),
        Entry("micrograd Value, gc off", "micrograd",
              partial(micrograd, "gc off while timed, as timeit does")),
    ])


def random_graph(suite):
    graph = workloads.random_graph(suite.sizes["graph_nodes"])
    n = graph.n_nodes
    name = f"random graph {n / 1e6:.1f}M" if n >= 1e6 else f"random graph {n // 1000}k"
    reference = {}  # pyrograd's value and gradient, for CasADi's check

    def pyrograd():
        start = time.perf_counter()
        _, leaves, y = workloads.pyrograd_graph(graph)
        build = time.perf_counter() - start
        y.backprop()
        reference["value"] = y.value
        reference["grad"] = [leaf.grad for leaf in leaves]
        return (workloads.pyrograd_sweep(leaves[0], y),
                f"build {build:.2f} s (not timed); set leaf + backprop")

    def casadi():
        start = time.perf_counter()
        f = workloads.casadi_graph(graph)
        build = time.perf_counter() - start
        note = f"build {build:.1f} s (not timed); SX Function -> value, gradient"
        if reference:
            value, grad = f(graph.leaf_values)
            errors = (workloads.relative_error(float(value), reference["value"]),
                      workloads.relative_error(np.asarray(grad).ravel(), reference["grad"]))
            print(f"  check vs pyrograd: value rel err {errors[0]:.1e},"
                  f" gradient rel err {errors[1]:.1e} (<= {GRAPH_TOLERANCE:g})", flush=True)
            if max(errors) > GRAPH_TOLERANCE:
                suite.fail(f"{name}: CasADi and pyrograd disagree")
                note += "; DISAGREES with pyrograd"
        else:
            note += "; unchecked (no pyrograd result)"
        return workloads.casadi_sweep(f, graph), note

    suite.run(name, n, "ns/node", [
        Entry("pyrograd", "pyrograd", pyrograd),
        Entry("CasADi SX", "casadi", casadi),
    ])


def derive_chain(suite):
    n_ops = suite.sizes["chain_nodes"]

    def pyrograd():
        x, z = workloads.pyrograd_chain(n_ops)
        return partial(z.derive, x), f"z = z * x + y, {len(z.tape):,} nodes; z.derive(x)"

    suite.run("derive chain", n_ops, "ns/node", [Entry("pyrograd", "pyrograd", pyrograd)])


def unary_op(suite):
    """Does a dedicated opcode pay over a native function pointer in the function table?"""
    n = suite.sizes["chain_nodes"]

    def sin_chain(sin, note):
        x, y = workloads.pyrograd_sin_chain(n, sin)
        return workloads.pyrograd_sweep(x, y), note

    def builtin():
        import pyrograd as pg
        return sin_chain(pg.sin, f"sin(sin(...x)), {n:,} deep; set + backprop")

    def native():
        return sin_chain(workloads.libm_sin(), "x.apply('libm_sin', libm sin, libm cos)")

    suite.run("unary op", n, "ns/node", [
        Entry("pyrograd pg.sin", "pyrograd", builtin),
        Entry("pyrograd apply(libm)", "pyrograd", native),
    ])


def curve_fit(suite):
    def checked(make_fit):
        """The fit make_fit() returns, checked once against the seeds README's result."""
        fit = make_fit()
        params = [float(p) for p in fit()]
        check = "mu={:.4f} sigma={:.5f} s={:.5f}".format(*params)
        if not workloads.curve_fit_ok(params):
            suite.fail(f"curve fit gave {check}, expected mu=1.2000 sigma=0.59576 s=0.74520")
            check += " WRONG"
        return fit, check

    def fit(implementation, package, make_fit, **options):
        return Entry(implementation, package, partial(checked, make_fit), **options)

    suite.run("curve fit", 1, "ms/fit", [
        fit("pyrograd loop/sample", "pyrograd", lambda: workloads.curve_fit_pyrograd_loop),
        fit("pyrograd grad_batch/epoch", "pyrograd", lambda: workloads.curve_fit_pyrograd_epochs),
        fit("pyrograd SGD.run", "pyrograd", lambda: workloads.curve_fit_pyrograd_run),
        fit("NumPy by hand", "numpy", lambda: workloads.curve_fit_numpy),
        fit("PyTorch", "torch", lambda: workloads.curve_fit_torch),
        # Built with the system cc, loaded with cffi.
        fit("C by hand (cc -O2)", "cffi", workloads.build_curve_fit_c,
            version="cc " + (cc_version() or "-").split()[-1]),
    ])


def grad_batch_threads(suite):
    """grad_batch over many rows of a small model: does a second thread pay?"""
    n_rows = suite.sizes["batch_rows"]

    def pyrograd(threads):
        loss, inputs, params, data = workloads.pyrograd_batch_model(n_rows=n_rows)
        note = f"{len(loss.tape)}-node model, {n_rows:,} rows"
        return partial(loss.tape.grad_batch, loss, inputs, data, params, threads=threads), note

    suite.run("grad_batch threads", n_rows, "ns/row", [
        Entry("pyrograd, 1 thread", "pyrograd", partial(pyrograd, 1)),
        Entry("pyrograd, 2 threads", "pyrograd", partial(pyrograd, 2)),
    ])


def moons_step(suite):
    """micrograd's moons demo, one training step (workloads.py has the model);
    every implementation is checked against pyrograd's first three losses."""
    steps = suite.sizes["moons_steps"]
    reference = workloads.moons_pyrograd()
    expected = [reference() for _ in range(3)]

    def checked(step, note):
        losses = [step() for _ in range(3)]
        error = workloads.relative_error(np.array(losses), np.array(expected))
        note += f"; first 3 losses match pyrograd's to {error:.0e}"
        if error > 1e-12:
            suite.fail(f"moons step: losses {losses}, pyrograd's {expected}")
            note += " NO"
        return step, note

    def jax():
        step, compile_seconds = workloads.moons_jax()
        return checked(step, f"jit, compiled in {compile_seconds:.2f} s (not timed)")

    suite.run("moons step", 1, "ms/step", [
        Entry("pyrograd Trainer, 1 step/call", "pyrograd",
              lambda: checked(workloads.moons_pyrograd(), "trainer.train(epochs=1) per step")),
        Entry(f"pyrograd Trainer, {steps} steps/call", "pyrograd",
              lambda: (workloads.moons_pyrograd(steps), f"trainer.train(epochs={steps}), per step")),
        Entry("micrograd", "micrograd", lambda: checked(workloads.moons_micrograd(), "its demo's loop"),
              collect=True),
        Entry("PyTorch eager", "torch", lambda: checked(workloads.moons_torch(), "float64 tensors")),
        Entry("JAX", "jax", jax),
    ], per_call={f"pyrograd Trainer, {steps} steps/call": steps})


WORKLOADS = {
    "node-build": node_build,
    "random-graph": random_graph,
    "derive-chain": derive_chain,
    "unary-op": unary_op,
    "curve-fit": curve_fit,
    "grad-batch-threads": grad_batch_threads,
    "moons-step": moons_step,
}


def header(argv):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    packages = ", ".join(f"{p} {version(p) if installed(p) else 'not installed'}"
                         for p in ("pyrograd", "numpy", "micrograd", "casadi", "torch", "jax"))
    return "\n".join([
        f"pyrograd benchmarks, {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"command:  python bench/compare.py {' '.join(argv)}".rstrip(),
        f"machine:  {cpu}, {len(os.sched_getaffinity(0))} cores,"
        f" {platform.system()} {platform.machine()},"
        f" load average {os.getloadavg()[0]:.2f} at the start (other work skews the times)",
        f"python:   {platform.python_version()} ({platform.python_implementation()})",
        f"packages: {packages}",
        f"cc:       {cc_version() or 'not found'}",
    ])


def table(rows):
    lines = [f"{'workload':<20} {'implementation':<26} {'version':<12}"
             f" {'median':>10} {'unit':<8} {'x pyrograd':>10}  note"]
    for workload, group in itertools.groupby(rows, key=lambda r: r.workload):
        group = list(group)
        base = group[0].seconds
        for row in group:
            median = f"{row.seconds * UNITS[row.unit]:.4g}" if not math.isnan(row.seconds) else "-"
            ratio = format_ratio(row.seconds / base)
            lines.append(f"{row.workload:<20} {row.implementation:<26} {row.version:<12}"
                         f" {median:>10} {row.unit:<8} {ratio:>10}  {row.note}")
    return "\n".join(lines)


def format_ratio(ratio):
    """Two decimals, or two significant digits below 0.1."""
    if math.isnan(ratio):
        return "-"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def targets(rows, quick):
    """The issues' speed targets, met or not; "not measured" where a side did not run."""
    def t(workload, implementation):
        return next((r.seconds for r in rows if r.workload.startswith(workload)
                     and r.implementation == implementation), math.nan)

    epochs = t("curve fit", "pyrograd grad_batch/epoch")
    many_steps = next((r.implementation for r in rows if r.workload.startswith("moons step")
                       and r.implementation.endswith(" steps/call")), "")
    checks = [
        ("node build: micrograd / pyrograd >= 15",
         t("node build", "micrograd Value") / t("node build", "pyrograd"), lambda v: v >= 15),
        ("random graph: pyrograd / CasADi <= 0.6",
         t("random graph", "pyrograd") / t("random graph", "CasADi SX"), lambda v: v <= 0.6),
        ("curve fit: grad_batch/epoch ms per fit <= 1.0", epochs * 1e3, lambda v: v <= 1.0),
        ("curve fit: grad_batch/epoch / NumPy < 1",
         epochs / t("curve fit", "NumPy by hand"), lambda v: v < 1),
        ("curve fit: grad_batch/epoch / PyTorch < 1",
         epochs / t("curve fit", "PyTorch"), lambda v: v < 1),
        ("curve fit: SGD.run / C by hand <= 3.5",
         t("curve fit", "pyrograd SGD.run") / t("curve fit", "C by hand (cc -O2)"),
         lambda v: v <= 3.5),
        ("moons step: PyTorch eager / pyrograd (1 step/call) >= 10",
         t("moons step", "PyTorch eager") / t("moons step", "pyrograd Trainer, 1 step/call"),
         lambda v: v >= 10),
        ("moons step: PyTorch eager / pyrograd (many steps/call, as examples/moons.py trains) >= 10",
         t("moons step", "PyTorch eager") / t("moons step", many_steps), lambda v: v >= 10),
        ("moons step: pyrograd (1 step/call) / JAX jit <= 1.5",
         t("moons step", "pyrograd Trainer, 1 step/call") / t("moons step", "JAX"), lambda v: v <= 1.5),
        ("grad_batch: 1 thread / 2 threads >= 1.7",
         t("grad_batch threads", "pyrograd, 1 thread")
         / t("grad_batch threads", "pyrograd, 2 threads"), lambda v: v >= 1.7),
    ]
    lines = ["targets" + (" (quick sizes: the issues set them at full size)" if quick else "")]
    for text, value, ok in checks:
        verdict = "not measured" if math.isnan(value) else (
            f"{value:.2f}, {'met' if ok(value) else 'NOT met'}")
        lines.append(f"  {text}: {verdict}")
    return "\n".join(lines)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--only", choices=WORKLOADS, help="run this workload only")
    args = parser.parse_args(argv)

    print(header(argv), flush=True)
    suite = Suite(QUICK if args.quick else FULL)
    for name, workload in WORKLOADS.items():
        if args.only in (None, name):
            workload(suite)
    print()
    print(table(suite.rows))
    print()
    print(targets(suite.rows, args.quick))
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
