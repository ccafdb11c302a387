"""pg.render and pg.animate: real SVG, PNG and GIF files, the error and the
DOT text left behind without graphviz, and the frames of an animation."""
import sys

import numpy as np
import pytest

import pyrograd as pg

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def abc():
    tape = pg.Tape()
    a, b, c = tape.term("a", 123.0), tape.term("b", 321.0), tape.term("c", 42.0)
    return tape, a, b, c, (a + b) * c


@pytest.fixture
def no_dot(monkeypatch, tmp_path):
    """A PATH on which graphviz's dot cannot be found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_render_svg_of_a_term(dot_program, abc, tmp_path):
    *_, y = abc
    y.backprop()
    path = pg.render(y, tmp_path / "graph.svg", show_values=True)
    assert path == tmp_path / "graph.svg"
    svg = path.read_text()
    assert "<svg" in svg
    assert "value = 444" in svg and "grad = 444" in svg  # the + node, and c
    assert not (tmp_path / "graph.dot").exists()


def test_render_png_of_a_tape(dot_program, abc, tmp_path):
    tape, *_ = abc
    unused = tape.term("unused", 1.0) * 2  # on the tape, not under y
    path = pg.render(tape, str(tmp_path / "tape.PNG"), rankdir="TB")
    assert path.read_bytes()[:8] == PNG
    svg = pg.render(tape, tmp_path / "tape.svg").read_text()
    assert "unused" in svg
    assert unused.value == 2.0


def test_render_passes_dot_options_on(dot_program, abc, tmp_path):
    *_, y = abc
    with pytest.raises(ValueError, match="rankdir"):
        pg.render(y, tmp_path / "graph.svg", rankdir="sideways")
    with pytest.raises(TypeError):
        pg.render(y, tmp_path / "graph.svg", colour="blue")
    assert not (tmp_path / "graph.svg").exists()


def test_render_refuses_unknown_extensions_and_objects(abc, tmp_path):
    *_, y = abc
    for name in ("graph.pdf", "graph.dot", "graph", "graph.svg.gz"):
        with pytest.raises(ValueError, match=".svg or .png"):
            pg.render(y, tmp_path / name)
    with pytest.raises(TypeError, match="Term or a Tape"):
        pg.render(123.0, tmp_path / "graph.svg")
    assert list(tmp_path.iterdir()) == []


def test_render_without_dot_says_how_to_install_it_and_leaves_the_dot_text(no_dot, abc, tmp_path):
    *_, y = abc
    with pytest.raises(pg.GraphvizNotFoundError) as caught:
        pg.render(y, tmp_path / "graph.svg", show_values=True)
    message = str(caught.value)
    assert "apt-get install graphviz" in message and "conda" in message
    assert str(tmp_path / "graph.dot") in message
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, pg.PyrogradError)
    assert not (tmp_path / "graph.svg").exists()
    assert (tmp_path / "graph.dot").read_text() == y.dot(show_values=True)
    assert y.value == 18648.0  # the tape is still usable


def test_render_reports_a_failing_dot_and_leaves_the_dot_text(monkeypatch, abc, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text("#!/bin/sh\necho 'syntax error near line 1' >&2\nexit 3\n")
    (fake / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    *_, y = abc
    with pytest.raises(RuntimeError, match="syntax error near line 1") as caught:
        pg.render(y, tmp_path / "graph.png")
    assert not isinstance(caught.value, pg.GraphvizNotFoundError)
    assert (tmp_path / "graph.dot").read_text() == y.dot()
    assert not (tmp_path / "graph.png").exists()


def test_render_says_why_dot_died(monkeypatch, abc, tmp_path):
    # graphviz's dot segfaulted on a 300,000-node graph, and the error said
    # only "dot failed: ".
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text("#!/bin/sh\nkill -SEGV $$\n")
    (fake / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    monkeypatch.delenv("LD_PRELOAD", raising=False)  # a sanitizer would catch the SEGV itself
    *_, y = abc
    with pytest.raises(RuntimeError, match="killed by SIGSEGV.*draw fewer nodes"):
        pg.render(y, tmp_path / "graph.png")


def _chain(n):
    tape = pg.Tape()
    y = x = tape.term("x", 0.5)
    for _ in range(n - 1):
        y = pg.sin(y)
    return tape, x, y


def test_pictures_too_big_to_finish_are_refused_before_any_work(monkeypatch, tmp_path):
    # A 41-node animate took 232 s and 7.9 GB; dot crashed on 300,000 nodes.
    from pyrograd import pictures

    def never(*args):
        raise AssertionError("dot must not run")

    monkeypatch.setattr(pictures, "_run_dot", never)
    tape, x, y = _chain(41)
    with pytest.raises(ValueError, match=r"animate would draw 41 nodes, more than max_nodes=20.*max_nodes=None"):
        pg.animate(y, tmp_path / "a.gif")
    tape, x, y = _chain(2001)
    with pytest.raises(ValueError, match=r"render would draw 2001 nodes, more than max_nodes=2000"):
        pg.render(y, tmp_path / "g.svg")
    with pytest.raises(ValueError, match=r"render would draw 2001 nodes"):
        pg.render(tape, tmp_path / "g.svg")
    with pytest.raises(ValueError, match=r"render would draw 2001 nodes, more than max_nodes=10"):
        pg.render(y, tmp_path / "g.svg", max_nodes=10)
    with pytest.raises(ValueError, match="max_nodes must be"):
        pg.render(y, tmp_path / "g.svg", max_nodes=0)
    assert not list(tmp_path.iterdir())


def test_max_nodes_none_draws_any_size(dot_program, tmp_path):
    tape, x, y = _chain(2001)
    pg.render(y, tmp_path / "g.svg", max_nodes=None)
    assert (tmp_path / "g.svg").read_text().count("<g id=\"node") == 2001


def test_animate_without_dot(no_dot, abc, tmp_path):
    pytest.importorskip("PIL")
    *_, y = abc
    with pytest.raises(pg.GraphvizNotFoundError, match="apt-get install graphviz"):
        pg.animate(y, tmp_path / "anim.gif")
    assert not (tmp_path / "anim.gif").exists()


def gif_frames(path):
    """The frames of a GIF as RGB images, and each one's duration in ms."""
    Image = pytest.importorskip("PIL.Image")
    frames, durations = [], []
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        for k in range(gif.n_frames):
            gif.seek(k)
            durations.append(gif.info["duration"])
            frames.append(gif.convert("RGB"))
    return frames, durations


def red_pixels(image):
    rgb = np.asarray(image).astype(int)
    return int(((rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum())


def test_animate_has_a_forward_and_a_backward_frame_per_node(dot_program, abc, tmp_path):
    pytest.importorskip("PIL")
    tape, a, b, c, y = abc
    path = pg.animate(y, tmp_path / "anim.gif", fps=4)
    assert path.read_bytes()[:6] == b"GIF89a"
    frames, durations = gif_frames(path)
    assert len(frames) == 2 * 5  # a, b, c, a + b, (a + b) * c: forward, then backward
    assert set(durations) == {250}
    assert len({f.size for f in frames}) == 1  # one size: the picture does not jump
    assert all(red_pixels(f) > 0 for f in frames)  # the current node is drawn in red
    assert len({f.tobytes() for f in frames}) == len(frames)
    # It left what backprop leaves.
    assert (a.grad, b.grad, c.grad, y.grad) == (42.0, 42.0, 444.0, 1.0)


def test_animation_frames_reveal_values_then_grads(dot_program, abc, tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    tape, a, b, c, y = abc
    from pyrograd import pictures

    texts = []
    run_dot = pictures._run_dot

    def recording(text, image_format):
        texts.append(text)
        return run_dot(text, image_format)

    monkeypatch.setattr(pictures, "_run_dot", recording)
    pg.animate(y, tmp_path / "anim.gif", precision=6)
    assert len(texts) == 10
    forward, backward = texts[:5], texts[5:]
    # Forward: nodes in tape order; the k-th frame knows k values and no grads.
    for k, text in enumerate(forward):
        assert text.count("value = \\n") == 4 - k
        assert text.count('grad = "') == 5
    assert "value = 18648" in forward[-1] and "value = 18648" not in forward[-2]
    # Backward: from the loss down, one more grad each frame.
    for k, text in enumerate(backward):
        assert "value = \\n" not in text
        assert text.count('grad = "') == 4 - k
    assert "grad = 1\"" in backward[0] and "grad = 444\"" not in backward[0]
    assert "grad = 42\"" in backward[1]  # a + b comes right after the loss
    # The highlighted node runs up the tape, then back down.
    red = [next(line.split()[0] for line in text.splitlines() if "red" in line) for text in texts]
    up = [f"n{i}" for i in range(5)]  # a, b, c, a + b, (a + b) * c
    assert red == up + up[::-1]


def test_animate_vertical_lays_the_graph_out_top_to_bottom(dot_program, tmp_path):
    pytest.importorskip("PIL")
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    y = pg.exp(pg.sin(pg.tanh(x)))  # a chain of four nodes
    wide, _ = gif_frames(pg.animate(y, tmp_path / "wide.gif"))
    tall, _ = gif_frames(pg.animate(y, tmp_path / "tall.gif", vertical=True))
    assert len(wide) == len(tall) == 8
    assert wide[0].width > wide[0].height
    assert tall[0].height > tall[0].width


def test_animate_refuses_bad_arguments(abc, tmp_path):
    pytest.importorskip("PIL")
    tape, a, b, c, y = abc
    for name in ("anim.png", "anim", "anim.svg"):
        with pytest.raises(ValueError, match=".gif"):
            pg.animate(y, tmp_path / name)
    for fps in (0, -1, float("nan"), float("inf"), "2", None, True):
        with pytest.raises(ValueError, match="fps"):
            pg.animate(y, tmp_path / "anim.gif", fps=fps)
    for loss in (tape, 1.0, [y]):
        with pytest.raises(TypeError, match="Term"):
            pg.animate(loss, tmp_path / "anim.gif")
    assert list(tmp_path.iterdir()) == []


def test_animate_without_pillow_says_what_to_install(abc, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    *_, y = abc
    with pytest.raises(ImportError, match=r"pip install 'pyrograd\[viz\]'"):
        pg.animate(y, tmp_path / "anim.gif")
    assert not (tmp_path / "anim.gif").exists()


def test_save_gif_pads_every_frame_to_one_size(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    images = [Image.new("RGB", (40, 10), "red"), Image.new("RGBA", (10, 30), "blue"), Image.new("L", (20, 20), 0)]
    path = pg.pictures.save_gif(images, str(tmp_path / "frames.gif"), fps=5)
    frames, durations = gif_frames(path)
    assert [f.size for f in frames] == [(40, 30)] * 3
    assert durations == [200] * 3
    # The small frames sit centered on white.
    blue = np.asarray(frames[1])
    assert tuple(blue[0, 0]) == (255, 255, 255) and tuple(blue[15, 20]) == (0, 0, 255)
    with pytest.raises(ValueError, match="at least one frame"):
        pg.pictures.save_gif([], tmp_path / "empty.gif", fps=5)
    with pytest.raises(ValueError, match="fps"):
        pg.pictures.save_gif(images, tmp_path / "bad.gif", fps=0)


def test_save_gif_holds_the_last_frame(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    images = [Image.new("RGB", (10, 10), color) for color in ("red", "green", "blue")]
    path = pg.pictures.save_gif(images, tmp_path / "held.gif", fps=5, hold_last=2.0)
    frames, durations = gif_frames(path)  # GIF keeps centiseconds
    assert len(frames) == 3
    assert durations == [200, 200, 2200]
    for bad in (-1.0, "2", True, float("nan")):
        with pytest.raises(ValueError, match="hold_last"):
            pg.pictures.save_gif(images, tmp_path / "bad.gif", fps=8, hold_last=bad)


def test_figure_image_is_the_figure_as_a_frame():
    pytest.importorskip("PIL.Image")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3, 2))
    try:
        image = pg.pictures.figure_image(fig, dpi=50)
    finally:
        plt.close(fig)
    assert image.size == (150, 100)
