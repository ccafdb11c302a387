"""Item 9: pickle.dumps of a tape that another thread is extending (named
leaves, operators, Tape.extend, apply): every pickle made loads, and holds a
consistent prefix of the tape; or dumps raises TapeBusyError.  Never an
unloadable pickle, never "dictionary changed size during iteration"."""
import math
import pickle
import threading

import numpy as np

import pyrograd as pg
from _hostile import ok, scaled


def f(v):
    return math.tanh(v)


def df(v):
    return 1.0 - math.tanh(v) ** 2


def one_round():
    tape = pg.Tape()
    x = tape.term("x", 0.5)
    growing = threading.Event()
    grower_errors = []
    extensions = scaled(400, least=100)

    def grow():
        try:
            for k in range(extensions):
                try:
                    leaf = tape.term(f"leaf{k}", float(k))
                    node = leaf * x + 1.0
                    node = node.apply(f"f{k}", f, df)  # a new function, and a new registration
                    tape.extend(["leaf", "add"], a=[0, len(tape)], b=[0, node.index], value=[k, 0.0],
                                names={len(tape): f"bulk{k}"})
                except pg.TapeBusyError:
                    pass
                growing.set()
        except BaseException as error:  # noqa: BLE001
            grower_errors.append(error)
        finally:
            growing.set()

    thread = threading.Thread(target=grow)
    thread.start()
    growing.wait()
    blobs, busy = [], 0
    while thread.is_alive():  # pickles, for as long as the tape grows
        try:
            blob = pickle.dumps(tape)
            if len(blobs) < 300:
                blobs.append(blob)
        except pg.TapeBusyError:
            busy += 1
    thread.join()
    assert not grower_errors, grower_errors
    assert blobs, "no pickle was made"
    print(f"{len(blobs)} pickles kept, {busy} refused as busy, tape of {len(tape)} nodes")
    final = tape.to_arrays()
    values = tape.values([tape[i] for i in range(len(tape))])
    for blob in blobs:
        loaded = pickle.loads(blob)
        n = len(loaded)
        arrays = loaded.to_arrays()
        for key in ("op", "a", "b"):
            assert np.array_equal(arrays[key], final[key][:n]), key
        assert arrays["names"] == {i: name for i, name in final["names"].items() if i < n}
        got = loaded.values([loaded[i] for i in range(n)])
        assert np.array_equal(got, values[:n]), "a loaded pickle computes other values"


for _ in range(4):
    one_round()
ok()
