"""Item 7: pg.render of a 300,000-node graph and pg.animate of a 41-node
chain raise a clear error quickly (the node count, the limit, how to go
past it), not minutes of work or a crash of graphviz."""
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import pyrograd as pg
from _hostile import SLOWDOWN, ok

BOUND = 5.0 * SLOWDOWN  # seconds: generous; the check needs no graphviz run at all


def clear(error, count):
    text = str(error)
    assert re.search(rf"{count}|{count:,}", text), f"the message does not give the node count {count}: {text}"
    assert re.search(r"limit|at most|more than|max", text, re.I), f"the message does not give the limit: {text}"
    assert "=" in text or "option" in text or "argument" in text, f"the message does not say how to override: {text}"


def timed(call):
    start = time.perf_counter()
    try:
        call()
    except (ValueError, pg.PyrogradError) as error:
        elapsed = time.perf_counter() - start
        return error, elapsed
    raise AssertionError("no error: the picture was drawn")


out = Path(tempfile.mkdtemp())
n = 300_000
tape = pg.Tape()
x = tape.term("x", 0.5)
tape.extend(["add"] * (n - 1), a=np.arange(n - 1, dtype=np.uint32), b=np.zeros(n - 1, np.uint32))
root = tape[len(tape) - 1]
assert len(tape) == n
for target in (root, tape):
    error, elapsed = timed(lambda: pg.render(target, out / "big.svg"))
    assert not isinstance(error, pg.GraphvizNotFoundError), "the size was not checked before looking for graphviz"
    clear(error, n)
    assert elapsed < BOUND, f"render took {elapsed:.1f} s to refuse {n} nodes"

chain = pg.Tape()
y = chain.term("y", 0.1)
for _ in range(40):
    y = pg.sin(y)
assert len(chain) == 41
try:
    error, elapsed = timed(lambda: pg.animate(y, out / "chain.gif"))
except (ImportError, pg.GraphvizNotFoundError) as missing:
    if shutil.which("dot") is None or isinstance(missing, ImportError):
        print(f"animate: skipped, its check comes after what is missing here: {missing}")
    else:
        raise
else:
    clear(error, 41)
    assert elapsed < BOUND, f"animate took {elapsed:.1f} s to refuse 41 nodes"
ok()
