"""Item 15: nn.load of a file whose parameter array is 2-D (or otherwise
not what the model needs) raises a ValueError (a TypeError for a wrong dtype) that says what is wrong,
not "holds 13 parameters, but its MLP has 13"."""
import re
import tempfile
from pathlib import Path

import numpy as np

import pyrograd as pg
from _hostile import ok

folder = Path(tempfile.mkdtemp())
model = pg.nn.MLP(2, [3, 1], seed=0)
n = len(model.parameters())
path = folder / "model.npz"
model.save(path)
saved = dict(np.load(path))
again = pg.nn.load(path)
assert again.tape.values(again.parameters()).tolist() == saved["parameters"].tolist()

for what, parameters in [
    ("2-D, one row", saved["parameters"].reshape(1, n)),
    ("2-D, one column", saved["parameters"].reshape(n, 1)),
    ("0-D", np.array(1.0)),
    ("of str", np.array(["1.0"] * n)),
    ("too few", saved["parameters"][:-1]),
    ("with a NaN", np.where(np.arange(n) == 2, np.nan, saved["parameters"])),
]:
    bad = folder / "bad.npz"
    np.savez(bad, **{**saved, "parameters": parameters})
    try:
        loaded = pg.nn.load(bad)
    except (ValueError, TypeError) as error:
        text = str(error)
        same = re.search(r"holds (\d+) parameters, but its \w+ has (\d+)", text)
        assert not (same and same.group(1) == same.group(2)), f"{what}: a message that says nothing: {text}"
        print(f"{what}: {text}")
    else:
        if what == "with a NaN":  # a NaN weight is a value, not a malformed file: loading it is fine
            assert np.isnan(loaded.tape.values(loaded.parameters())[2])
            continue
        raise AssertionError(f"{what}: loaded")
ok()
