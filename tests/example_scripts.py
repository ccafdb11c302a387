"""Loading and running the scripts in examples/, for the tests of them."""
import importlib.util
import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def example(name):
    """examples/name.py as a module, without running its main()."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name, *args, cwd, prelude=""):
    """Runs examples/name with args in a new Python, after the prelude's code."""
    code = "\n".join(["import runpy, sys", prelude, f"sys.argv = [{name!r}] + {list(args)!r}",
                      f"runpy.run_path({str(EXAMPLES / name)!r}, run_name='__main__')"])
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
