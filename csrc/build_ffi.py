"""Generates the C source of the cffi extension module `_pyrograd_core`.

CMake runs this at build time (python build_ffi.py OUTPUT.c); the cdef is the
part of pyrograd.h between the "cdef" markers, so the header is the only
place where the C API is written down.
"""
import pathlib
import re
import sys

import cffi

HERE = pathlib.Path(__file__).resolve().parent

# Called by the tape for functions given from Python, and as the progress
# handler of long calls (pyrograd/_binding.py).
PYTHON_CALLBACKS = """
extern "Python" int pg_py_callback(void *ud, double x, double *out);
extern "Python" int pg_py_progress(void *ud);
"""


def cdef_text():
    header = (HERE / "pyrograd.h").read_text()
    match = re.search(r"/\* --- cdef begin --- \*/(.*)/\* --- cdef end --- \*/", header, re.S)
    if not match:
        sys.exit("build_ffi.py: pyrograd.h has no cdef markers")
    return match.group(1) + PYTHON_CALLBACKS


def make_ffi():
    ffi = cffi.FFI()
    ffi.cdef(cdef_text())
    ffi.set_source("_pyrograd_core", '#include "pyrograd.h"')
    return ffi


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python build_ffi.py OUTPUT.c")
    make_ffi().emit_c_code(sys.argv[1])
