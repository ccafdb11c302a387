"""The examples: what each claims (without drawing, so it needs no
matplotlib), and each script's --quick run, which draws (skipped without
the examples extra: pip install '.[examples]')."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyrograd as pg

from example_scripts import EXAMPLES, example, run


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


# ---- rustograd's pictures: arithmetic, curve_fit, peak_separation, path_smooth

GIF = b"GIF89a"
PNG = b"\x89PNG\r\n\x1a\n"


def test_arithmetic_derivatives_both_ways():
    value, derived, grads = example("arithmetic").derivatives()
    assert value == 18648.0
    assert derived == (42.0, 42.0, 444.0)
    assert grads == (42.0, 42.0, 444.0)


def test_curve_fit_reaches_rustograds_parameters():
    curve_fit = example("curve_fit")
    (tape, x, y, params, curve, loss), history, losses = curve_fit.fit()
    assert history.shape == (101, 3) and len(losses) == 100
    assert list(history[0]) == [0.0, 1.0, 1.0]
    mu, sigma, scale = history[-1]
    assert abs(mu - 1.2000) < 5e-5 and abs(sigma - 0.59576) < 5e-6 and abs(scale - 0.74520) < 5e-6
    assert np.all(np.diff(losses) < 0)
    # The same 100 epochs as one C call (optimizer.run) land on the same parameters.
    tape2, x2, y2, params2, _, loss2 = curve_fit.model()
    pg.optim.SGD(params2, lr=curve_fit.RATE).run(loss2, [x2, y2], curve_fit.samples(), epochs=100)
    assert np.allclose(tape2.values(params2), history[-1], rtol=1e-12, atol=0)


def test_peak_separation_recovers_both_peaks():
    peaks = example("peak_separation")
    data = peaks.samples()
    assert data.shape == (80, 2) and data[48, 0] == 0.8 and data[37, 0] == -0.3
    _, history, losses = peaks.fit()
    assert list(history[0]) == peaks.START
    assert np.abs(history[-1] - peaks.TRUTH).max() < 1e-3
    assert np.abs(history[-1] - peaks.TRUTH).max() < 0.1 * np.abs(history[0] - peaks.TRUTH).max()
    assert losses[-1] < 1e-6 * losses[0]


def test_path_smooth_keeps_its_ends_converges_and_stays_off_the_bump():
    smooth = example("path_smooth")
    (tape, points, loss), history, losses = smooth.smooth()
    final = history[-1]
    assert np.array_equal(final[[0, -1]], smooth.START[[0, -1]])
    assert np.all(np.diff(losses) <= 0)
    loss.backprop()
    inner = [leaf for point in points[1:-1] for leaf in point]
    assert np.abs(tape.grads(inner)).max() < 1e-4  # a stationary point
    # Start and loss are symmetric under (x, y) -> (2 - y, 2 - x) with the order reversed: so is the result.
    mirrored = np.column_stack([2 - final[::-1, 1], 2 - final[::-1, 0]])
    assert np.allclose(final, mirrored, atol=1e-9)
    assert abs(np.hypot(*(final[3] - smooth.BUMP)) - 0.50) < 0.01
    # Without the bump, the same descent pulls the path straight and evenly spaced through it.
    _, flat, _ = smooth.smooth(steps=3000, bump_scale=0.0)
    assert np.allclose(flat[-1], np.linspace([0, 0], [2, 2], 7), atol=1e-3)


def _needs(*modules, dot=False):
    for module in modules:
        pytest.importorskip(module)
    if dot and shutil.which("dot") is None:
        pytest.skip("graphviz's dot program is not installed")


@pytest.mark.parametrize("name, pictures, says, needs", [
    ("arithmetic.py", {"arithmetic.svg": b"<svg", "arithmetic.png": PNG, "arithmetic.gif": GIF},
     "derive by a, b, c          42, 42, 444", dict(modules=["PIL"], dot=True)),
    ("curve_fit.py", {"curve_fit.gif": GIF}, "epoch 100  mu 1.2000  sigma 0.59576  s 0.74520",
     dict(modules=["matplotlib", "PIL"])),
    ("peak_separation.py", {"peak_separation.gif": GIF}, "largest error",
     dict(modules=["matplotlib", "PIL"])),
    ("path_smooth.py", {"path_smooth.gif": GIF}, "the middle point is 0.50 from the bump",
     dict(modules=["matplotlib", "PIL"])),
])
def test_quick_run_makes_pictures(name, pictures, says, needs, tmp_path):
    _needs(*needs["modules"], dot=needs.get("dot", False))
    result = run(name, "--quick", "--out", "pictures", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert says in result.stdout
    for picture, magic in pictures.items():
        data = (tmp_path / "pictures" / picture).read_bytes()
        assert magic in data[:300], picture
        if magic == GIF:
            Image = pytest.importorskip("PIL.Image")
            with Image.open(tmp_path / "pictures" / picture) as gif:
                assert gif.n_frames > 1
    if name == "curve_fit.py" and shutil.which("dot"):
        assert b"<svg" in (tmp_path / "pictures" / "curve_fit_graph.svg").read_bytes()[:300]


def test_arithmetic_says_how_to_install_graphviz(tmp_path):
    result = run("arithmetic.py", "--quick", cwd=tmp_path, prelude="import os; os.environ['PATH'] = ''")
    assert result.returncode == 1
    assert "apt-get install graphviz" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["curve_fit.py", "peak_separation.py", "path_smooth.py"])
def test_gifs_say_how_to_install_pillow(name, tmp_path):
    result = run(name, "--quick", cwd=tmp_path, prelude="sys.modules['PIL'] = None")
    assert result.returncode == 1
    assert "pip install 'pyrograd[viz]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_gallery_regenerates_the_pictures(tmp_path):
    _needs("matplotlib", "PIL", dot=True)
    result = subprocess.run([sys.executable, str(EXAMPLES / "gallery.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for picture in ("arithmetic.gif", "arithmetic.svg", "curve_fit.gif", "curve_fit_graph.svg",
                    "peak_separation.gif", "path_smooth.gif"):
        assert (tmp_path / picture).stat().st_size > 0, picture
        assert f"{picture} " in result.stdout


def test_committed_gallery_pictures_are_small():
    pictures = list((EXAMPLES / "gallery").iterdir())
    assert len(pictures) >= 6
    for picture in pictures:
        assert picture.stat().st_size < 150_000, picture.name
