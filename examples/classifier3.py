"""rustograd's 3-class classifier: classifier.py with a third blob, up between the other two.

The same softmax regression with L2 and Adam as classifier.py (this script
runs its code with classes=3), as rustograd's tape_3classifier.rs: three
logits, three linear decision regions meeting at one point.  Training
accuracy ends at 0.95 or more.

    python examples/classifier3.py [--quick] [--out DIR]
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # classifier.py lives beside this file
import classifier  # noqa: E402


def main(argv=None):
    classifier.main(argv, classes=3, script="classifier3", doc=__doc__)


if __name__ == "__main__":
    main()
