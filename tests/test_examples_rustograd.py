"""rustograd's example gallery: sine.py, mixed_sine.py, classifier.py and
classifier3.py.  What each claims, checked without drawing (so without
matplotlib), and each script's --quick run, which draws (skipped without the
examples extra: pip install '.[examples]')."""
import numpy as np
import pytest

from example_scripts import example, run

PNG = b"\x89PNG\r\n\x1a\n"


# ---- sine.py and mixed_sine.py: both sweeps equal the closed form


def test_sine_derive_and_backprop_are_cos():
    sine = example("sine")
    xs = np.linspace(-np.pi, np.pi, 101)
    table = sine.curves(sine.sine, xs)
    assert table.shape == (101, 3)
    np.testing.assert_allclose(table[:, 0], np.sin(xs), rtol=0, atol=1e-15)
    np.testing.assert_allclose(table[:, 1], np.cos(xs), rtol=0, atol=1e-15)
    np.testing.assert_allclose(table[:, 2], np.cos(xs), rtol=0, atol=1e-15)


def test_mixed_sine_derive_and_backprop_match_the_closed_form():
    sine, mixed = example("sine"), example("mixed_sine")
    xs = np.linspace(-2 * np.pi, 2 * np.pi, 81)  # rustograd's points
    table = sine.curves(mixed.mixed_sine, xs)
    np.testing.assert_allclose(table[:, 0], np.sin(xs) + 0.2 * np.sin(5 * xs), rtol=0, atol=1e-14)
    exact = np.cos(xs) + np.cos(5 * xs)
    np.testing.assert_allclose(mixed.mixed_sine_derivative(xs), exact, rtol=0, atol=1e-14)
    np.testing.assert_allclose(table[:, 1], exact, rtol=0, atol=1e-14)
    np.testing.assert_allclose(table[:, 2], exact, rtol=0, atol=1e-14)


# ---- classifier.py and classifier3.py


def test_blobs_are_seeded_and_balanced():
    classifier = example("classifier")
    X, y = classifier.make_blobs(3, seed=4)
    X_again, _ = classifier.make_blobs(3, seed=4)
    assert X.shape == (150, 2) and np.array_equal(X, X_again)
    assert np.array_equal(np.bincount(y.astype(int)), [50, 50, 50])
    with pytest.raises(ValueError, match="classes must be 2..3"):
        classifier.make_blobs(4)


@pytest.mark.parametrize("classes", [2, 3])
def test_classifier_training_accuracy(classes):
    classifier = example("classifier")
    trainer, X, y, losses = classifier.train(classes)
    assert trainer.model.nout == classes
    assert len(losses) == classifier.EPOCHS and losses[-1] < losses[0] / 10
    assert classifier.accuracy(trainer, X, y) >= 0.95


def test_l2_keeps_the_weights_smaller():
    classifier = example("classifier")
    regularized, *_ = classifier.train(2)
    free, *_ = classifier.train(2, weight_decay=0.0)

    def norm(trainer):
        return np.linalg.norm(trainer.model.tape.values(trainer.model.parameters()))

    assert norm(regularized) < 0.8 * norm(free)


def test_decision_regions_give_each_center_its_class():
    classifier = example("classifier")
    trainer, X, y, _ = classifier.train(3)
    xx, yy, probabilities = classifier.regions(trainer, X, 41)
    assert xx.shape == yy.shape == (41, 41) and probabilities.shape == (41, 41, 3)
    np.testing.assert_allclose(probabilities.sum(axis=2), 1.0, rtol=0, atol=1e-12)
    for k, (cx, cy) in enumerate(classifier.CENTERS):
        row, column = np.argmin(np.abs(yy[:, 0] - cy)), np.argmin(np.abs(xx[0] - cx))
        assert probabilities[row, column].argmax() == k
    # The grid's probabilities are the softmax of the model's logits, point by point.
    point = np.array([[xx[5, 7], yy[5, 7]]])
    logits = trainer.predict(point)[0]
    np.testing.assert_allclose(probabilities[5, 7], np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)


# ---- the scripts


@pytest.mark.parametrize("name, picture, says", [
    ("sine.py", "sine.png", "largest |derive - closed form|"),
    ("mixed_sine.py", "mixed_sine.png", "over 41 points"),
    ("classifier.py", "classifier.png", "on 100 points of 2 classes"),
    ("classifier3.py", "classifier3.png", "on 150 points of 3 classes"),
])
def test_quick_run_draws(name, picture, says, tmp_path):
    pytest.importorskip("matplotlib")
    result = run(name, "--quick", "--out", "pictures", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert says in result.stdout
    assert (tmp_path / "pictures" / picture).read_bytes()[:8] == PNG


@pytest.mark.parametrize("name", ["sine.py", "mixed_sine.py", "classifier.py", "classifier3.py"])
def test_says_what_is_missing_without_matplotlib(name, tmp_path):
    result = run(name, "--quick", cwd=tmp_path, prelude="sys.modules['matplotlib'] = None")
    assert result.returncode == 1
    assert f"{name} draws with matplotlib: pip install" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pyrograd-examples").exists()
