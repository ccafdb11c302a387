"""pyrograd.nn: modules, inits, save/load and the Trainer, against hand-worked
values, explicit training loops and micrograd."""
import math
import sys

import numpy as np
import pytest

import pyrograd as pg
from pyrograd import losses, nn
from pyrograd.nn import Activation


def set_parameters(model, values):
    model.tape.set_values(model.parameters(), np.array(values, dtype=np.float64))


# ---- activations


@pytest.mark.parametrize("activation, x, expected", [
    (Activation.LINEAR, -2.0, -2.0),
    (Activation.RELU, -2.0, 0.0),
    (Activation.RELU, 3.0, 3.0),
    (Activation.LEAKY_RELU, -2.0, -0.02),
    (Activation.LEAKY_RELU, 3.0, 3.0),
    (Activation.TANH, 0.5, math.tanh(0.5)),
    (Activation.SIGMOID, 0.0, 0.5),
    (Activation.SOFTPLUS, 0.0, math.log(2)),
])
def test_activations(activation, x, expected):
    assert activation(x) == pytest.approx(expected)
    leaf = pg.Tape().term(value=x)
    assert activation(leaf).value == pytest.approx(expected)


def test_leaky_relu_gradient():
    leaf = pg.Tape().term(value=-2.0)
    assert Activation.LEAKY_RELU(leaf).derive(leaf) == pytest.approx(0.01)


# ---- modules


def test_neuron_is_relu_of_w_x_plus_b():
    n = nn.Neuron(2)
    set_parameters(n, [2.0, -3.0, 0.5])  # w0, w1, b
    assert n([1.0, 0.0]).value == 2.5
    assert n([1.0, 1.0]).value == 0.0  # relu(-0.5)
    out = n([1.0, 0.5])  # 2 - 1.5 + 0.5 = 1
    out.backprop()
    assert out.value == 1.0
    assert [p.grad for p in n.parameters()] == [1.0, 0.5, 1.0]


def test_linear_neuron_keeps_negative_values():
    n = nn.Neuron(2, nonlin=False)
    set_parameters(n, [2.0, -3.0, 0.5])
    assert n([1.0, 1.0]).value == -0.5


def test_neuron_with_an_activation():
    n = nn.Neuron(1, Activation.TANH)
    set_parameters(n, [1.0, 0.0])
    assert n([0.5]).value == pytest.approx(math.tanh(0.5))


def test_neuron_on_terms_of_its_tape():
    n = nn.Neuron(2)
    set_parameters(n, [1.0, 1.0, 0.0])
    x = [n.tape.term(value=2.0), n.tape.term(value=3.0)]
    out = n(x)
    assert out.value == 5.0
    assert out.derive(x[1]) == 1.0


def test_layer_of_one_neuron_gives_a_term_and_of_more_a_list():
    one = nn.Layer(2, 1)
    assert isinstance(one([1.0, 2.0]), pg.Term)
    three = nn.Layer(2, 3)
    outs = three([1.0, 2.0])
    assert isinstance(outs, list) and len(outs) == 3
    set_parameters(three, [1, 0, 0, 0, 1, 0, -1, -1, 10])
    assert [o.value for o in three([1.0, 2.0])] == [1.0, 2.0, 7.0]


def test_mlp_is_micrograds_shape():
    model = nn.MLP(2, [16, 16, 1])
    assert model.parameter_count() == 337  # 16 * 3 + 16 * 17 + 17
    assert [layer.activation for layer in model.layers] == [Activation.RELU, Activation.RELU, Activation.LINEAR]
    assert (model.nin, model.nout) == (2, 1)


def test_mlp_by_hand():
    # 1 -> 2 (ReLU) -> 1 (linear): h = relu(x w_i + b_i), out = v . h + c
    model = nn.MLP(1, [2, 1])
    set_parameters(model, [2.0, -1.0, -1.0, 0.5, 3.0, -2.0, 0.25])
    x = 1.5  # h = relu(2), relu(-1) = 2, 0
    assert model([x]).value == 3.0 * 2.0 - 2.0 * 0.0 + 0.25
    out = model([x])
    out.backprop()
    w0, b0, w1, b1, v0, v1, c = (p.grad for p in model.parameters())
    assert (w0, b0, w1, b1) == (3.0 * x, 3.0, 0.0, 0.0)  # the second unit is off
    assert (v0, v1, c) == (2.0, 0.0, 1.0)


def test_mlp_with_one_unit_in_the_middle():
    model = nn.MLP(2, [1, 3])
    assert len(model([1.0, 1.0])) == 3


def test_modules_share_a_tape_when_given_one():
    tape = pg.Tape()
    model = nn.MLP(2, [3, 1], tape=tape)
    assert model.tape is tape and all(p.tape is tape for p in model.parameters())
    assert nn.Neuron(2).tape is not nn.Neuron(2).tape


def test_zero_grad():
    model = nn.MLP(2, [3, 1], seed=0)
    model([1.0, -1.0]).backprop()
    assert model.tape.grads(model.parameters()).any()
    model.zero_grad()
    assert not model.tape.grads(model.parameters()).any()


def test_wrong_number_of_inputs():
    with pytest.raises(ValueError, match="MLP takes 2 inputs, not 3"):
        nn.MLP(2, [3, 1])([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="Neuron takes 2 inputs, not 1"):
        nn.Neuron(2)(1.0)


def test_terms_of_another_tape():
    with pytest.raises(pg.TapeMismatchError):
        nn.Neuron(1)([pg.Tape().term(value=1.0)])


@pytest.mark.parametrize("make", [
    lambda: nn.Neuron(0), lambda: nn.Layer(2, 0), lambda: nn.MLP(2, []),
    lambda: nn.MLP(2, [3, 1.5]), lambda: nn.Neuron(True), lambda: nn.Neuron(2, init="he"),
    lambda: nn.MLP(2, [3, 1], activations=[Activation.RELU]),
    lambda: nn.Layer(2, 3, init=lambda rng, nin, nout: (np.ones((nin, nout)), np.zeros(nout))),
])
def test_bad_shapes_and_options(make):
    with pytest.raises(ValueError):
        make()


def test_bad_types():
    with pytest.raises(TypeError, match="nonlin"):
        nn.Neuron(2, nonlin="relu")
    with pytest.raises(TypeError, match="tape"):
        nn.Neuron(2, tape="tape")


# ---- initial values


def drawn(rng_seed, shape):
    return np.random.default_rng(rng_seed).uniform(-1.0, 1.0, shape)


def weights_and_biases(layer):
    values = layer.tape.values(layer.parameters()).reshape(layer.nout, layer.nin + 1)
    return values[:, :-1], values[:, -1]


def test_micrograd_init():
    w, b = weights_and_biases(nn.Layer(3, 4, seed=7))
    assert np.array_equal(w, drawn(7, (4, 3)))
    assert not b.any()


def test_kaiming_init():
    w, b = weights_and_biases(nn.Layer(3, 4, init="kaiming", seed=7))
    assert np.allclose(w, drawn(7, (4, 3)) * math.sqrt(2 / 3), rtol=0, atol=1e-15)
    assert (b == 0.1).all()


def test_glorot_init():
    w, b = weights_and_biases(nn.Layer(3, 4, init="glorot", seed=7))
    limit = math.sqrt(6 / 7)
    assert np.allclose(w, drawn(7, (4, 3)) * limit, rtol=0, atol=1e-15)
    assert not b.any()


def test_init_callable():
    w, b = weights_and_biases(nn.Layer(2, 3, init=lambda rng, nin, nout: (np.ones((nout, nin)), np.arange(nout))))
    assert (w == 1).all() and list(b) == [0, 1, 2]


def test_seeds_are_reproducible_and_layers_draw_in_turn():
    first, again = nn.MLP(2, [3, 1], seed=1), nn.MLP(2, [3, 1], seed=1)
    values = first.tape.values(first.parameters())
    assert np.array_equal(values, again.tape.values(again.parameters()))
    rng = np.random.default_rng(1)
    hidden, top = rng.uniform(-1, 1, (3, 2)), rng.uniform(-1, 1, (1, 3))
    assert np.array_equal(weights_and_biases(first.layers[0])[0], hidden)
    assert np.array_equal(weights_and_biases(first.layers[1])[0], top)
    other = nn.MLP(2, [3, 1], seed=2)
    assert not np.array_equal(values, other.tape.values(other.parameters()))


def test_a_generator_as_seed_continues_its_stream():
    rng = np.random.default_rng(3)
    a, b = nn.Neuron(2, seed=rng), nn.Neuron(2, seed=rng)
    expected = np.random.default_rng(3).uniform(-1, 1, 4)
    assert np.array_equal(np.concatenate([a.tape.values(a.w), b.tape.values(b.w)]), expected)


# ---- RustGrad's builder


def test_mlp_builder():
    model = (nn.MlpBuilder(3, seed=0).add_layer(8, Activation.RELU)
             .add_layer(4, Activation.TANH).add_layer(1, Activation.LINEAR).build())
    assert isinstance(model, nn.MLP)
    assert [(layer.nin, layer.nout, layer.activation) for layer in model.layers] == [
        (3, 8, Activation.RELU), (8, 4, Activation.TANH), (4, 1, Activation.LINEAR)]
    w, b = weights_and_biases(model.layers[0])
    assert (b == 0.1).all() and np.abs(w).max() <= math.sqrt(2 / 3)  # Kaiming, as RustGrad


def test_mlp_builder_errors():
    with pytest.raises(ValueError, match="at least one layer"):
        nn.MlpBuilder(3).build()
    with pytest.raises(TypeError):
        nn.MlpBuilder(3).add_layer(2, "relu")


# ---- save and load


@pytest.mark.parametrize("make", [
    lambda: nn.Neuron(3, Activation.SIGMOID, seed=0),
    lambda: nn.Layer(3, 2, nonlin=False, seed=0),
    lambda: nn.MlpBuilder(3, seed=0).add_layer(4, Activation.LEAKY_RELU).add_layer(2, Activation.SOFTPLUS).build(),
])
def test_save_load_round_trip(make, tmp_path):
    model = make()
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = nn.load(path)
    assert type(loaded) is type(model) and repr(loaded) == repr(model)
    assert loaded.tape is not model.tape
    assert np.array_equal(loaded.tape.values(loaded.parameters()), model.tape.values(model.parameters()))
    x = [0.3, -1.2, 2.0]
    before, after = model(x), loaded(x)
    if isinstance(before, list):
        before, after = [t.value for t in before], [t.value for t in after]
    else:
        before, after = before.value, after.value
    assert before == after


def test_load_onto_a_tape(tmp_path):
    nn.Neuron(2, seed=0).save(tmp_path / "n.npz")
    tape = pg.Tape()
    assert nn.load(tmp_path / "n.npz", tape=tape).tape is tape


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, values=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved pyrograd.nn model"):
        nn.load(path)



def _saved_fields(tmp_path):
    nn.MLP(2, [3, 1], seed=0).save(tmp_path / "mlp.npz")
    with np.load(tmp_path / "mlp.npz") as file:
        return dict(file)


@pytest.mark.parametrize("change, message", [
    # a 2-D parameter array used to be "holds 13 parameters, but its MLP has 13"
    ({"parameters": np.zeros((13, 1))}, r"parameters must be a 1-D array of shape \(13,\) for an MLP "
                                        r"with 2 inputs and layer sizes \[3, 1\], not an array of shape \(13, 1\)"),
    ({"parameters": np.zeros(12)}, r"shape \(13,\) .* not an array of shape \(12,\)"),
    ({"parameters": np.array(["a"] * 13)}, "parameters must be floats"),
    ({"kind": "Perceptron"}, "its kind is 'Perceptron', not one of Neuron, Layer, MLP"),
    ({"kind": np.array(["MLP", "MLP"])}, r"kind must be one of .* not an array of shape \(2,\)"),
    ({"nin": 2.5}, r"nin must be a number of inputs \(an int\)"),  # was read as 2
    ({"nin": 0}, "0 inputs .* must be positive"),
    ({"sizes": np.array(3)}, "sizes must be a 1-D array"),
    ({"sizes": np.array([3, 0])}, r"layer sizes \[3, 0\]: they must be positive"),
    ({"activations": ["relu"]}, "its 2 layers need 2 activations, but it has 1"),
    ({"activations": ["relu", "swish"]}, "activation 'swish' is not one of linear, relu"),
    ({"kind": "Neuron"}, r"a Neuron has one output, but its sizes are \[3, 1\]"),  # sizes were ignored
    ({"kind": "Layer"}, r"a Layer has one layer, but its sizes are \[3, 1\]"),
])
def test_load_says_what_is_wrong_with_a_file(tmp_path, change, message):
    fields = _saved_fields(tmp_path)
    fields.update(change)
    np.savez(tmp_path / "bad.npz", **fields)
    tape = pg.Tape()
    with pytest.raises(ValueError, match="bad.npz is not a saved pyrograd.nn model: .*" + message):
        nn.load(tmp_path / "bad.npz", tape=tape)
    assert len(tape) == 0  # refused before anything was built


@pytest.mark.parametrize("content, message", [
    (b"not an npz file", "numpy cannot read it as an .npz file"),
    (b"", "numpy cannot read it as an .npz file"),
])
def test_load_refuses_files_numpy_cannot_read(tmp_path, content, message):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        nn.load(path)


def test_load_refuses_an_npy_file_and_object_arrays(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"holds one array \(an .npy file\)"):
        nn.load(tmp_path / "one.npy")
    fields = _saved_fields(tmp_path)
    fields["activations"] = np.array(["relu", None], dtype=object)
    np.savez(tmp_path / "objects.npz", **fields)
    with pytest.raises(ValueError, match="an array numpy cannot read without pickle"):
        nn.load(tmp_path / "objects.npz")


def test_load_takes_float32_parameters(tmp_path):
    fields = _saved_fields(tmp_path)
    fields["parameters"] = fields["parameters"].astype(np.float32)
    np.savez(tmp_path / "f32.npz", **fields)
    model = nn.load(tmp_path / "f32.npz")
    assert np.array_equal(model.tape.values(model.parameters()), fields["parameters"].astype(np.float64))

# ---- the Trainer


def make_moons(n, seed):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, np.pi, n // 2)
    X = np.vstack([np.column_stack([np.cos(t), np.sin(t)]), np.column_stack([1 - np.cos(t), 0.5 - np.sin(t)])])
    return X + rng.normal(scale=0.1, size=X.shape), np.hstack([-np.ones(n // 2), np.ones(n // 2)])


def explicit_training(model, loss_fn, X, y, steps, lr, alpha=0.0, batches=None):
    """Plain gradient descent by a Python loop of set and backprop over the
    rows: the mean loss of each batch plus alpha * l2, as micrograd's demo."""
    tape, params = model.tape, model.parameters()
    xs = [tape.term() for _ in range(X.shape[1])]
    target = tape.term()
    sample_loss = loss_fn(model(xs), target)
    batches = batches or [np.arange(len(X))]
    history = []
    for k in range(steps):
        total = 0.0
        for rows in batches:
            grads, data_loss = np.zeros(len(params)), 0.0
            for r in rows:
                tape.set_values(xs, X[r])
                target.set(y[r])
                sample_loss.backprop()
                grads += tape.grads(params)
                data_loss += sample_loss.value
            values = tape.values(params)
            step_loss = data_loss / len(rows) + alpha * (values ** 2).sum()
            grads = grads / len(rows) + 2 * alpha * values
            tape.set_values(params, values - lr(k) * grads)
            total += step_loss * len(rows)
        history.append(total / len(X))
    return history


def moons_trainer(X, y, alpha, lr, seed=0):
    model = nn.MLP(2, [8, 8, 1], seed=seed)
    regularization = (lambda ps: alpha * losses.l2(ps)) if alpha else None
    return nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=lr), losses.hinge, regularization)


@pytest.mark.parametrize("alpha", [0.0, 1e-3])
def test_trainer_matches_an_explicit_loop(alpha):
    X, y = make_moons(40, seed=1)
    schedule = lambda k: 1.0 - 0.9 * k / 10  # noqa: E731
    trainer = moons_trainer(X, y, alpha, schedule)
    got = trainer.train(X, y, epochs=10, progress=False)
    reference = nn.MLP(2, [8, 8, 1], seed=0)
    expected = explicit_training(reference, losses.hinge, X, y, 10, schedule, alpha)
    assert got == pytest.approx(expected, rel=1e-12)
    assert trainer.model.tape.values(trainer.model.parameters()) == pytest.approx(
        reference.tape.values(reference.parameters()), rel=1e-12, abs=1e-15)
    assert got[-1] < got[0] / 2


def test_trainer_in_batches_matches_an_explicit_loop():
    X, y = make_moons(40, seed=2)
    trainer = moons_trainer(X, y, 1e-3, 0.5)
    got = trainer.train(X, y, epochs=3, batch_size=16, shuffle=False, progress=False)
    reference = nn.MLP(2, [8, 8, 1], seed=0)
    batches = [np.arange(0, 16), np.arange(16, 32), np.arange(32, 40)]
    expected = explicit_training(reference, losses.hinge, X, y, 3, lambda k: 0.5, 1e-3, batches)
    assert got == pytest.approx(expected, rel=1e-12)


def test_trainer_shuffles_by_seed():
    X, y = make_moons(40, seed=3)
    runs = [moons_trainer(X, y, 0.0, 0.1).train(X, y, 2, batch_size=8, seed=s, progress=False) for s in (5, 5, 6)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_trainer_gives_micrograds_numbers():
    engine = pytest.importorskip("micrograd.engine")
    micrograd_nn = pytest.importorskip("micrograd.nn")
    X, y = make_moons(10, seed=4)
    model = nn.MLP(2, [16, 16, 1], seed=0)
    reference = micrograd_nn.MLP(2, [16, 16, 1])
    for p, value in zip(reference.parameters(), model.tape.values(model.parameters())):
        p.data = float(value)
    trainer = nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=lambda k: 1.0 - 0.9 * k / 100),
                         losses.hinge, regularization=lambda ps: 1e-4 * losses.l2(ps))
    got = trainer.train(X, y, epochs=3, progress=False)
    for k in range(3):  # micrograd's demo, step by step
        scores = [reference(list(map(engine.Value, row))) for row in X]
        data_loss = sum((1 + -yi * si).relu() for yi, si in zip(y, scores)) * (1.0 / len(X))
        total = data_loss + 1e-4 * sum(p * p for p in reference.parameters())
        reference.zero_grad()
        total.backward()
        for p in reference.parameters():
            p.data -= (1.0 - 0.9 * k / 100) * p.grad
        assert got[k] == pytest.approx(total.data, rel=1e-12)
    assert model.tape.values(model.parameters()) == pytest.approx(
        [p.data for p in reference.parameters()], rel=1e-12, abs=1e-15)


def test_softmax_regression_trains():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2)) + np.repeat([[3, 0], [0, 3], [-3, -3]], 20, axis=0)
    y = np.repeat([0.0, 1.0, 2.0], 20)
    model = nn.Layer(2, 3, nonlin=False, init="glorot", seed=0)
    trainer = nn.Trainer(model, pg.optim.Adam(model.parameters(), lr=0.1), losses.softmax_cross_entropy)
    history = trainer.train(X, y, epochs=50, progress=False)
    assert history[-1] < 0.1 < history[0]
    assert (trainer.predict(X).argmax(axis=1) == y).mean() == 1.0


def test_mse_with_several_outputs():
    X = np.array([[0.0], [1.0]])
    Y = np.array([[1.0, -1.0], [3.0, 0.0]])
    model = nn.Layer(1, 2, nonlin=False, seed=0)
    trainer = nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=0.3), losses.mse)
    assert trainer.train(X, Y, epochs=500, progress=False)[-1] < 1e-20
    assert trainer.predict(X) == pytest.approx(Y, abs=1e-10)


def test_predict():
    model = nn.MLP(2, [4, 1], seed=0)
    trainer = nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=0.1), losses.mse)
    X = np.array([[0.5, -1.0], [2.0, 0.25], [0.0, 0.0]])
    expected = [model(list(row)).value for row in X]
    assert trainer.predict(X).tolist() == expected
    assert trainer.predict_single([2.0, 0.25]) == expected[1]
    assert isinstance(trainer.predict_single(X[0]), float)


def test_predict_with_several_outputs():
    model = nn.Layer(2, 3, seed=0)
    trainer = nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=0.1), losses.softmax_cross_entropy)
    assert trainer.predict(np.zeros((5, 2))).shape == (5, 3)
    assert trainer.predict_single([1.0, 2.0]).tolist() == [t.value for t in model([1.0, 2.0])]


def test_trainer_refuses_bad_data():
    model = nn.MLP(2, [4, 1], seed=0)
    initial = model.tape.values(model.parameters())
    trainer = nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=0.1), losses.hinge)
    X, y = np.zeros((4, 2)), np.array([1.0, -1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match=r"the model takes 2 features, and X has shape \(4, 3\)"):
        trainer.train(np.zeros((4, 3)), y, 1)
    with pytest.raises(ValueError, match="one entry .* per row of X"):
        trainer.train(X, y[:3], 1)
    with pytest.raises(ValueError, match="hinge labels must be -1 or \\+1, not 0"):
        trainer.train(X, np.array([1.0, 0.0, 1.0, 0.0]), 1)
    with pytest.raises(ValueError, match="epochs"):
        trainer.train(X, y, -1)
    with pytest.raises(ValueError, match="batch_size"):
        trainer.train(X, y, 1, batch_size=0)
    with pytest.raises(ValueError, match="at least one row"):
        trainer.train(np.zeros((0, 2)), np.zeros(0), 1)
    with pytest.raises(ValueError, match="the model takes 2 features"):
        trainer.predict_single([1.0])
    assert np.array_equal(model.tape.values(model.parameters()), initial)  # nothing trained


def test_trainer_refuses_labels_out_of_range():
    model = nn.Layer(4, 3, nonlin=False, seed=0)
    trainer = nn.Trainer(model, pg.optim.Adam(model.parameters()), losses.softmax_cross_entropy)
    with pytest.raises(ValueError, match="class index 3 is not one of 0..2"):
        trainer.train(np.zeros((2, 4)), [0, 3], 1)


def test_trainer_refuses_a_mismatched_setup():
    model = nn.MLP(2, [4, 1], seed=0)
    stranger = nn.MLP(2, [4, 1], seed=0)
    with pytest.raises(pg.TapeMismatchError):
        nn.Trainer(model, pg.optim.SGD(stranger.parameters(), lr=0.1), losses.mse)
    with pytest.raises(TypeError, match="regularization must give a Term"):
        nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=0.1), losses.mse, regularization=lambda ps: 1.0)
    with pytest.raises(TypeError, match="must be a pyrograd.nn.Module"):
        nn.Trainer("model", pg.optim.SGD(model.parameters(), lr=0.1), losses.mse)


def test_progress(capsys, monkeypatch):
    model = nn.Neuron(1, nonlin=False, seed=0)
    trainer = nn.Trainer(model, pg.optim.SGD(model.parameters(), lr=0.1), losses.mse)
    X, y = np.array([[1.0], [2.0]]), np.array([2.0, 4.0])
    trainer.train(X, y, 5, progress=False)
    assert capsys.readouterr() == ("", "")
    monkeypatch.setitem(sys.modules, "tqdm", None)  # no tqdm: the plain line
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    trainer.train(X, y, 5)
    err = capsys.readouterr().err
    assert "epoch 5/5" in err and "loss" in err and "epochs/s" in err
