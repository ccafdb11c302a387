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
import signal
import subprocess

from .dot import drawn_nodes, to_dot
from .errors import GraphvizNotFoundError
from .tape import Tape, Term

_FORMATS = {".svg": "svg", ".png": "png"}

_INSTALL_GRAPHVIZ = ("install graphviz: `apt-get install graphviz` (Debian, Ubuntu), "
                     "`brew install graphviz` (macOS) or `conda install -c conda-forge graphviz`")
_INSTALL_PILLOW = "pip install 'pyrograd[viz]' (or pip install pillow)"

# How many nodes a picture draws unless told otherwise (max_nodes=None: no
# limit).  Measured on a 2-core machine with graphviz 2.43: dot took 37 s for
# a 1,000-node random graph and crashed on a 300,000-node one; animate runs
# dot twice a node on the whole graph, and took 15 s and 0.2 GB for 15 nodes,
# 94 s and 1.4 GB for 30, 300 s and 4 GB for 45.
RENDER_MAX_NODES = 2000
ANIMATE_MAX_NODES = 20


def render(term_or_tape, path, *, max_nodes=RENDER_MAX_NODES, **dot_options):
    """Draws the graph of a Term (what it depends on) or of a whole Tape into
    `path`: SVG or PNG, chosen by its extension.  `dot_options` are those of
    `Term.dot` (show_values, precision, highlight, rankdir).  Returns the path.

    A graph of more than `max_nodes` nodes (2000) raises ValueError before
    any work: graphviz takes minutes past a few thousand nodes and crashes
    on hundreds of thousands.  max_nodes=None draws any size.

    Without graphviz's `dot` program it raises GraphvizNotFoundError (also a
    RuntimeError) saying how to install it, after writing the DOT text beside
    `path` (same name, extension .dot) so it can be rendered elsewhere.
    """
    path = pathlib.Path(path)
    image_format = _FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"render writes .svg or .png files, not {path.name!r}")
    if isinstance(term_or_tape, Term):
        tape, root = term_or_tape.tape, term_or_tape
    elif isinstance(term_or_tape, Tape):
        tape, root = term_or_tape, None
    else:
        raise TypeError(f"render draws a Term or a Tape, not {type(term_or_tape).__name__}")
    count = len(drawn_nodes(tape, root)) if root is not None else len(tape)
    _check_size(count, max_nodes, "render", "graphviz takes minutes past a few thousand nodes")
    text = to_dot(tape, root, **dot_options)
    try:
        path.write_bytes(_run_dot(text, image_format))
    except RuntimeError as error:  # dot missing (GraphvizNotFoundError) or failing
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(text)
        raise type(error)(f"{error}; the DOT text is in {dot_path}") from None
    return path


def animate(loss, path, vertical=False, fps=2, *, precision=4, max_nodes=ANIMATE_MAX_NODES):
    """Writes a GIF of one forward pass through `loss`'s graph, node by node
    (the current node in red, its value appearing), then one backward pass
    from `loss` down (each grad appearing): two frames per node drawn.
    `vertical` lays the graph out top to bottom; `precision` is the number of
    significant digits printed.  Returns the path.

    It evaluates and backprops `loss` once, as `loss.backprop()` does, and
    steps through the numbers that left: a slow path for pictures only, which
    leaves the sweeps themselves untouched.  Each frame is one run of `dot`,
    so its cost grows with the square of the graph: a graph of more than
    `max_nodes` nodes (20) raises ValueError before any work (max_nodes=None
    draws any size).  Needs graphviz's `dot` (GraphvizNotFoundError
    otherwise) and Pillow (ImportError otherwise).
    """
    if not isinstance(loss, Term):
        raise TypeError(f"animate takes a Term, not {type(loss).__name__}")
    path = pathlib.Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"animate writes a .gif file, not {path.name!r}")
    _check_fps(fps)
    tape = loss.tape
    nodes = drawn_nodes(tape, loss).tolist()
    _check_size(len(nodes), max_nodes, "animate",
                f"it runs graphviz {2 * len(nodes)} times on the whole graph (30 nodes took 94 s and 1.4 GB)")
    Image = _pillow()

    loss.backprop()
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


def _check_size(count, max_nodes, what, cost):
    if max_nodes is None:
        return
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"max_nodes must be a positive int or None, not {max_nodes!r}")
    if count > max_nodes:
        raise ValueError(f"{what} would draw {count} nodes, more than max_nodes={max_nodes}: {cost}; "
                         f"pass max_nodes=None (or a larger number) to draw it anyway")


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
        reason = result.stderr.decode(errors="replace").strip()
        if result.returncode < 0:  # killed: graphviz crashes on huge graphs, saying nothing
            try:
                name = signal.Signals(-result.returncode).name
            except ValueError:
                name = f"signal {-result.returncode}"
            reason = f"{reason}; " if reason else ""
            reason += f"dot was killed by {name} (graphviz crashes on very large graphs: draw fewer nodes)"
        else:
            reason = reason or f"dot exited with status {result.returncode} and said nothing"
        raise RuntimeError(f"dot failed: {reason}")
    return result.stdout
