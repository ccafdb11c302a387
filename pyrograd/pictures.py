"""Pictures as files: a graph rendered by graphviz, and the GIF of a forward
and a backward pass through it, node by node (rustograd's backprop.gif);
save_gif, which assembles that GIF, also serves the examples' plots.

render and animate run graphviz's `dot` program; GIFs are put together with Pillow.
Neither is needed by the rest of pyrograd, so both are looked for only here,
when a picture is asked for.
"""
import io
import pathlib
import shutil
import subprocess

from .dot import drawn_nodes, to_dot
from .errors import GraphvizNotFoundError
from .tape import Tape, Term

_FORMATS = {".svg": "svg", ".png": "png"}

_INSTALL_GRAPHVIZ = ("install graphviz: `apt-get install graphviz` (Debian, Ubuntu), "
                     "`brew install graphviz` (macOS) or `conda install -c conda-forge graphviz`")
_INSTALL_PILLOW = "pip install 'pyrograd[viz]' (or pip install pillow)"


def render(term_or_tape, path, **dot_options):
    """Draws the graph of a Term (what it depends on) or of a whole Tape into
    `path`: SVG or PNG, chosen by its extension.  `dot_options` are those of
    `Term.dot` (show_values, precision, highlight, rankdir).  Returns the path.

    Without graphviz's `dot` program it raises GraphvizNotFoundError (also a
    RuntimeError) saying how to install it, after writing the DOT text beside
    `path` (same name, extension .dot) so it can be rendered elsewhere.
    """
    path = pathlib.Path(path)
    image_format = _FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"render writes .svg or .png files, not {path.name!r}")
    if isinstance(term_or_tape, Term):
        text = to_dot(term_or_tape.tape, term_or_tape, **dot_options)
    elif isinstance(term_or_tape, Tape):
        text = to_dot(term_or_tape, None, **dot_options)
    else:
        raise TypeError(f"render draws a Term or a Tape, not {type(term_or_tape).__name__}")
    try:
        path.write_bytes(_run_dot(text, image_format))
    except RuntimeError as error:  # dot missing (GraphvizNotFoundError) or failing
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(text)
        raise type(error)(f"{error}; the DOT text is in {dot_path}") from None
    return path


def animate(loss, path, vertical=False, fps=2, *, precision=4):
    """Writes a GIF of one forward pass through `loss`'s graph, node by node
    (the current node in red, its value appearing), then one backward pass
    from `loss` down (each grad appearing): two frames per node drawn.
    `vertical` lays the graph out top to bottom; `precision` is the number of
    significant digits printed.  Returns the path.

    It evaluates and backprops `loss` once, as `loss.backprop()` does, and
    steps through the numbers that left: a slow path for pictures only, which
    leaves the sweeps themselves untouched.  Each frame is one run of `dot`,
    so it is meant for graphs of tens of nodes.  Needs graphviz's `dot`
    (GraphvizNotFoundError otherwise) and Pillow (ImportError otherwise).
    """
    if not isinstance(loss, Term):
        raise TypeError(f"animate takes a Term, not {type(loss).__name__}")
    path = pathlib.Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"animate writes a .gif file, not {path.name!r}")
    _check_fps(fps)
    Image = _pillow()

    loss.backprop()
    tape = loss.tape
    nodes = drawn_nodes(tape, loss).tolist()
    rankdir = "TB" if vertical else "LR"

    def frame(current, values_known, grads_known):
        text = to_dot(tape, loss, show_values=True, precision=precision, highlight={tape._term(current)},
                      rankdir=rankdir, _values_known=values_known, _grads_known=grads_known)
        return Image.open(io.BytesIO(_run_dot(text, "png"))).convert("RGB")

    # Forward: nodes in tape order, each value appearing when its node is reached.
    frames = [frame(i, set(nodes[:k + 1]), ()) for k, i in enumerate(nodes)]
    # Backward: from the loss down, each grad appearing (all values are known).
    backward = nodes[::-1]
    frames += [frame(i, None, set(backward[:k + 1])) for k, i in enumerate(backward)]

    return save_gif(frames, path, fps)


def save_gif(images, path, fps, hold_last=0.0):
    """Writes Pillow images as an endless GIF at `fps` frames per second,
    the last one shown `hold_last` seconds longer; the frames are padded to
    one size (each centered on white), so the picture does not jump.  The
    examples use it for their matplotlib frames (see figure_image)."""
    _check_fps(fps)
    Image = _pillow()
    if not images:
        raise ValueError("a GIF needs at least one frame")
    if isinstance(hold_last, bool) or not isinstance(hold_last, (int, float)) or not hold_last >= 0:
        raise ValueError(f"hold_last must be a number of seconds >= 0, not {hold_last!r}")
    width = max(image.width for image in images)
    height = max(image.height for image in images)
    frames = []
    for image in images:
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(image.convert("RGB"), ((width - image.width) // 2, (height - image.height) // 2))
        frames.append(canvas)
    durations = [round(1000 / fps)] * len(frames)
    durations[-1] += round(1000 * hold_last)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return pathlib.Path(path)


def figure_image(figure, dpi=80):
    """A matplotlib figure as a Pillow image: a frame for save_gif."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return _pillow().open(buffer)


def _check_fps(fps):
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 100:
        raise ValueError(f"fps must be a number of frames per second in (0, 100], not {fps!r}")


def _pillow():
    """PIL.Image, or an ImportError that says what to install."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"pyrograd assembles GIFs with Pillow: {_INSTALL_PILLOW}") from None
    return Image


def _run_dot(text, image_format):
    """The bytes graphviz's `dot` makes of DOT `text` in `image_format`."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizNotFoundError(f"graphviz's `dot` program is not on PATH; {_INSTALL_GRAPHVIZ}")
    result = subprocess.run([program, f"-T{image_format}"], input=text.encode(), capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout
