"""rustograd's first example: (a + b) * c, its derivatives two ways, its graph.

With a = 123, b = 321, c = 42 the value is 18648.  Forward mode (`derive`)
gives one derivative per call: 42, 42 and 444; reverse mode (`backprop`)
fills all three grads at once.  Draws the graph with every value and grad
(pg.render) and a GIF of the forward pass then the backward pass, node by
node (pg.animate), like rustograd's graphviz.svg and backprop.gif.

    python examples/arithmetic.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import shutil
import sys

import pyrograd as pg


def build():
    """The tape, the leaves a, b, c and the term (a + b) * c."""
    tape = pg.Tape()
    a = tape.term("a", 123.0)
    b = tape.term("b", 321.0)
    c = tape.term("c", 42.0)
    return tape, (a, b, c), (a + b) * c


def derivatives():
    """(value, derive by a, b and c, the grads backprop leaves in a, b and c)."""
    tape, leaves, abc = build()
    derived = tuple(abc.derive(leaf) for leaf in leaves)
    abc.backprop()
    return abc.value, derived, tuple(leaf.grad for leaf in leaves)


def draw(out):
    tape, leaves, abc = build()
    abc.backprop()
    pg.render(abc, out / "arithmetic.svg", show_values=True, precision=6)
    pg.render(abc, out / "arithmetic.png", show_values=True, precision=6)
    pg.animate(abc, out / "arithmetic.gif", fps=2, precision=6)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same (it is quick already), for CI")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("pyrograd-examples"),
                        help="folder for the pictures (default: %(default)s)")
    args = parser.parse_args(argv)
    if shutil.which("dot") is None:
        sys.exit("arithmetic.py draws with graphviz's dot: apt-get install graphviz"
                 " (or conda install -c conda-forge graphviz)")
    try:
        import PIL  # noqa: F401
    except ImportError:
        sys.exit("arithmetic.py makes its GIF with Pillow: pip install 'pyrograd[viz]'")

    value, derived, grads = derivatives()
    print("(a + b) * c with a = 123, b = 321, c = 42")
    print(f"  value                      {value:g}")
    print(f"  derive by a, b, c          {', '.join(f'{d:g}' for d in derived)}")
    print(f"  backprop: grads of a, b, c {', '.join(f'{g:g}' for g in grads)}")
    args.out.mkdir(parents=True, exist_ok=True)
    draw(args.out)
    print(f"pictures in {args.out}/: arithmetic.svg, arithmetic.png, arithmetic.gif")


if __name__ == "__main__":
    main()
