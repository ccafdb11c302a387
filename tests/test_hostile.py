"""The hostile-program suite: each program in tests/hostile/ attacks one
promise (signals, threads, fork, tampered pickles, failing callbacks, huge
inputs) and runs in a subprocess of its own, so that a crash is a failure
of that program rather than the end of the test run.

A program fails the test when it dies by a signal (a segfault, an abort, a
sanitizer), exits non-zero (a wrong value or an unexpected exception: its
traceback is shown), runs past its timeout, or writes anything to stderr
("Exception ignored from cffi callback", "Fatal Python error", a sanitizer
report, a warning).  The environment is passed through, so under CI's
LD_PRELOAD of ASan and UBSan the programs are sanitized too; there the
loops are scaled down (PYROGRAD_HOSTILE_SCALE) and the time bounds up
(PYROGRAD_HOSTILE_SLOWDOWN), unless those are set already.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HOSTILE = Path(__file__).parent / "hostile"
PROGRAMS = sorted(HOSTILE.glob("item_*.py"))
SANITIZED = "asan" in os.environ.get("LD_PRELOAD", "")
TIMEOUT = 300 if SANITIZED else 120  # seconds a program may run: far above what it needs


def environment():
    env = dict(os.environ)
    env.setdefault("PYROGRAD_HOSTILE_SCALE", "0.3" if SANITIZED else "1")
    env.setdefault("PYROGRAD_HOSTILE_SLOWDOWN", "2" if SANITIZED else "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOSTILE), env.get("PYTHONPATH")]))
    env["PYTHONFAULTHANDLER"] = "1"  # a crash shows the Python stack
    env.pop("PYTHONWARNINGS", None)
    return env


def describe(code):
    if code < 0:
        try:
            return f"died by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"died by signal {-code}"
    return f"exited with status {code}"


def test_every_program_is_collected():
    assert len(PROGRAMS) >= 17, [p.name for p in PROGRAMS]


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_hostile_program(program, tmp_path):
    # From a scratch folder: the installed package is what runs, not the
    # source tree's (CI runs the suite on an installed, sanitized build).
    try:
        done = subprocess.run([sys.executable, str(program)], cwd=tmp_path, env=environment(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{program.name} ran past {TIMEOUT} s\nstdout:\n{expired.stdout}\nstderr:\n{expired.stderr}")
    report = f"{program.name} {describe(done.returncode)}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stderr == "", f"{program.name} wrote to stderr\n{report}"
    last = done.stdout.strip().splitlines()[-1:] or [""]
    if last[0].startswith("SKIP"):
        pytest.skip(f"{program.name}: {last[0]}")
    assert last == ["OK"], f"{program.name} did not finish\n{report}"
