"""The examples: what each claims (without drawing, so it needs no
matplotlib), and each script's --quick run, which draws (skipped without
the examples extra: pip install '.[examples]')."""
import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name, *args, cwd, prelude=""):
    """Runs examples/name with args in a new Python, after the prelude's code."""
    code = "\n".join(["import runpy, sys", prelude, f"sys.argv = [{name!r}] + {list(args)!r}",
                      f"runpy.run_path({str(EXAMPLES / name)!r}, run_name='__main__')"])
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


# ---- the claims


def test_moons_data_is_scikit_learns():
    moons = example("moons")
    X, y = moons.make_moons(noise=0.0)
    datasets = pytest.importorskip("sklearn.datasets")
    X_sk, y_sk = datasets.make_moons(n_samples=100, noise=0.0, shuffle=False)
    assert np.allclose(X, X_sk, rtol=0, atol=1e-15)
    assert np.array_equal(y, 2 * y_sk - 1)


def test_moons_reaches_full_training_accuracy():
    moons = example("moons")
    trainer, X, y, losses, _ = moons.train()
    assert len(losses) == 100 and losses[-1] < losses[0] / 10
    assert moons.accuracy(trainer, X, y) == 1.0


def test_parity3d_predictions_within_five_hundredths():
    parity = example("parity3d")
    trainer, X, y, losses, _ = parity.train(progress=False)
    assert len(losses) == 10_000
    assert sorted(y[(X > 0).sum(axis=1) % 2 == 1]) == [1.0] * 4
    assert np.abs(trainer.predict(X) - y).max() < 0.05


def test_digits_test_accuracy():
    pytest.importorskip("sklearn")
    digits = example("digits")
    X_train, y_train, X_test, y_test = digits.load()
    assert (len(X_train), len(X_test)) == (1438, 359)
    trainer, losses, _ = digits.train(X_train, y_train, progress=False)
    assert digits.accuracy(trainer, X_test, y_test) >= 0.95


# ---- the scripts


@pytest.mark.parametrize("name, pictures, says", [
    ("moons.py", ["moons_boundary.png", "moons_loss.png"], "train accuracy 100%"),
    ("parity3d.py", ["parity3d.png"], "largest error"),
    ("digits.py", ["digits.png"], "time per epoch"),
])
def test_quick_run_draws(name, pictures, says, tmp_path):
    pytest.importorskip("matplotlib")
    if name == "digits.py":
        pytest.importorskip("sklearn")
    result = run(name, "--quick", "--out", "pictures", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert says in result.stdout
    for picture in pictures:
        assert (tmp_path / "pictures" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digits_says_what_is_missing_without_scikit_learn(tmp_path):
    result = run("digits.py", "--quick", cwd=tmp_path, prelude="sys.modules['sklearn'] = None")
    assert result.returncode == 1
    assert "pip install scikit-learn" in result.stderr
    assert "Traceback" not in result.stderr
