"""Regenerates the README's gallery: every picture of the picture examples.

Runs each example below that exists (in its own Python, into a scratch
folder) and copies the pictures it made into examples/gallery/.  An example
that fails (say, for a missing optional dependency) is reported, the others
still run.  Needs the viz extra and graphviz:
pip install 'pyrograd[viz]' and apt-get install graphviz.

    python examples/gallery.py [--quick] [--out DIR]
"""
import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = ["arithmetic", "curve_fit", "peak_separation", "path_smooth",
            "sine", "mixed_sine", "classifier", "classifier3"]
PICTURES = {".gif", ".png", ".svg"}
SMALL = 150_000  # bytes: the gallery is committed, so each picture stays small


def make(name, out, quick):
    """Runs examples/name.py into a scratch folder and copies its pictures to
    `out`; returns their paths, or None when the example failed."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, str(HERE / f"{name}.py"), "--out", scratch] + (["--quick"] if quick else [])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{name}.py failed:\n{result.stderr.strip()}", file=sys.stderr)
            return None
        made = []
        for picture in sorted(pathlib.Path(scratch).iterdir()):
            if picture.suffix in PICTURES:
                made.append(pathlib.Path(shutil.copy(picture, out / picture.name)))
        return made


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each example's --quick run, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "gallery",
                        help="folder for the pictures (default: examples/gallery)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in EXAMPLES:
        if not (HERE / f"{name}.py").exists():
            print(f"{name}.py: not here, skipped")
            continue
        made = make(name, args.out, args.quick)
        if made is None:
            failed.append(name)
            continue
        for picture in made:
            size = picture.stat().st_size
            warning = f"  (over {SMALL // 1000} KB: too big for the gallery)" if size > SMALL else ""
            print(f"{name}.py: {picture.name:28s} {size / 1000:6.1f} KB{warning}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
