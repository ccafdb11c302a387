"""Item 17: a child forked (os.fork) while another thread holds a tape in a
long sweep can use the tape (read values, build nodes, sweep) and exits 0."""
import os
import threading
import time
import warnings

import numpy as np

import pyrograd as pg
from _hostile import SLOWDOWN, model, ok, skip

if not hasattr(os, "fork"):
    skip("no os.fork on this platform")
# Python 3.12 warns that forking a process with threads may deadlock: that is
# what is under test here.
warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")

CHILD_BOUND = 20.0 * SLOWDOWN  # seconds the child may take: generous


tape, x, w, loss = model()
want = loss.value
small = np.linspace(-1, 1, 20).reshape(-1, 1)
want_batch = tape.eval_batch(loss, [x], small, threads=1)
data = np.zeros((60_000, 1))  # a sweep of a good fraction of a second

for threads in (1, 2):
    started, stop = threading.Event(), threading.Event()

    def sweep():
        started.set()
        while not stop.is_set():
            tape.eval_batch(loss, [x], data, threads=threads)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    started.wait()
    time.sleep(0.02)  # inside a sweep
    pid = os.fork()
    if pid == 0:  # the child: no sweeper thread here, and the tape must work
        status = 1
        try:
            assert loss.value == want
            x.set(0.3)
            z = pg.sin(loss) + tape.term("new", 2.0)
            z.backprop()
            assert w.grad != 0.0
            assert tape.eval_batch(loss, [x], small, threads=threads).tolist() == want_batch.tolist()
            status = 0
        except BaseException:  # noqa: BLE001
            import traceback
            traceback.print_exc()
        finally:
            os._exit(status)
    deadline = time.monotonic() + CHILD_BOUND
    while True:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            stop.set()
            sweeper.join()
            raise AssertionError(f"threads={threads}: the forked child hung (a lock held by a thread it lacks?)")
        time.sleep(0.01)
    stop.set()
    sweeper.join()
    assert os.WIFEXITED(code) and os.WEXITSTATUS(code) == 0, f"threads={threads}: the child ended with status {code}"
assert loss.value == want
ok()
