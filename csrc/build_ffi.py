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


# Calls that only append a node or read one value: a few nanoseconds of C
# that never waits (a busy tape fails at once), where cffi's wrapper would
# spend some 35 ns releasing and taking back the GIL, and saving errno
# (ffi.errno, which pyrograd does not read).  Their wrappers just call them.
# A user allocator called from them still runs: a cffi callback takes the
# GIL that its thread already holds.
KEEP_GIL = ("pg_leaf", "pg_const", "pg_unary", "pg_binary", "pg_binary_const",
            "pg_add", "pg_sub", "pg_mul", "pg_div", "pg_pow",
            "pg_peek_value", "pg_peek_grad")


def keep_gil(code, name):
    """The C code with the cffi wrapper of `name` calling it as it is."""
    call = re.compile(
        r"  Py_BEGIN_ALLOW_THREADS\n  _cffi_restore_errno\(\);\n"
        r"  (\{ result = %s\([^\n]*\); \})\n"
        r"  _cffi_save_errno\(\);\n  Py_END_ALLOW_THREADS\n" % name
    )
    code, n = call.subn(r"  \1\n", code)
    if n != 1:  # a cffi that writes its wrappers otherwise: they stay correct, only slower
        print(f"build_ffi.py: warning: {name} releases the GIL after all", file=sys.stderr)
    return code


def make_ffi():
    ffi = cffi.FFI()
    ffi.cdef(cdef_text())
    ffi.set_source("_pyrograd_core", '#include "pyrograd.h"')
    return ffi


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python build_ffi.py OUTPUT.c")
    output = pathlib.Path(sys.argv[1])
    make_ffi().emit_c_code(str(output))
    code = output.read_text()
    for name in KEEP_GIL:
        code = keep_gil(code, name)
    output.write_text(code)
