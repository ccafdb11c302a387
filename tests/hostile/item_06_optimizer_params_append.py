"""Item 6: a parameter appended to opt.params after the optimizer was made:
zero_grad, step, run and the Trainer's mini-batch step either raise an error
or honour the new list; they never read past the optimizer's arrays and
never change the grad or value of a node that is not a parameter."""
import numpy as np

import pyrograd as pg
from _hostile import ok

ERRORS = (ValueError, TypeError, RuntimeError, pg.PyrogradError)


def append_param(opt, b):
    """opt.params.append(b), which may be refused (params a tuple)."""
    try:
        opt.params.append(b)
    except AttributeError:
        pass


def fresh():
    tape = pg.Tape()
    a, b = tape.term("a", 1.0), tape.term("b", 2.0)
    others = [tape.term(f"o{k}", 10.0 + k) for k in range(8)]  # nodes right after them
    loss = (a * 3.0 + b * 5.0) ** 2
    tape.set_grads(others, np.full(len(others), 7.0))
    return tape, a, b, others, loss


def untouched(tape, others, grads=True):
    """(A training run may reset every grad, as backprop does: grads=False.)"""
    if grads:
        assert tape.grads(others).tolist() == [7.0] * len(others), "another node's grad changed"
    assert tape.values(others).tolist() == [10.0 + k for k in range(len(others))], "another node's value changed"


# zero_grad
tape, a, b, others, loss = fresh()
tape.set_grads([a, b], np.array([4.0, 5.0]))
opt = pg.optim.SGD([a], lr=0.1)
append_param(opt, b)
try:
    opt.zero_grad()
except ERRORS:
    pass
else:  # honoured: both zeroed, or (the list as made) a alone
    assert tape.grads([a, b]).tolist() in ([0.0, 0.0], [0.0, 5.0]), tape.grads([a, b])
untouched(tape, others)  # zero_grad

# step
for kind in (pg.optim.SGD, pg.optim.Adam, pg.optim.RMSprop, pg.optim.Adagrad):
    tape, a, b, others, loss = fresh()
    tape.set_grads([a, b], np.array([4.0, 5.0]))
    opt = kind([a], lr=0.1)
    append_param(opt, b)
    try:
        opt.step()
    except ERRORS:
        pass
    else:  # honoured: both stepped, or (the list as made) a alone
        outcomes = []
        for params in ("ab", "a"):
            reference = pg.Tape()
            ra, rb = reference.term("a", 1.0), reference.term("b", 2.0)
            reference.set_grads([ra, rb], np.array([4.0, 5.0]))
            kind([ra, rb] if params == "ab" else [ra], lr=0.1).step()
            outcomes.append(reference.values([ra, rb]).tolist())
        assert tape.values([a, b]).tolist() in outcomes, (kind.__name__, tape.values([a, b]), outcomes)
    untouched(tape, others)

# run
tape, a, b, others, loss = fresh()
x = tape.term("x", 0.0)
loss2 = loss + x
opt = pg.optim.SGD([a], lr=0.001)
append_param(opt, b)
try:
    opt.run(loss2, [x], np.zeros((4, 1)), epochs=3)
except ERRORS:
    pass
untouched(tape, others, grads=False)  # zero_grad

# the Trainer's mini-batch step, with a parameter appended after it was made
rng = np.random.default_rng(0)
X, y = rng.normal(size=(32, 2)), rng.normal(size=32)
model = pg.nn.MLP(2, [4, 1], seed=0)
opt = pg.optim.SGD(model.parameters(), lr=0.01)
trainer = pg.nn.Trainer(model, opt, pg.losses.mse)
tape = model.tape
extra = [tape.term(f"extra{k}", 10.0 + k) for k in range(8)]
tape.set_grads(extra, np.full(len(extra), 7.0))
trainer.train(X, y, epochs=1, batch_size=8, seed=0, progress=False)
append_param(opt, extra[0])
try:
    trainer.train(X, y, epochs=2, batch_size=8, seed=0, progress=False)
except ERRORS:
    pass
assert tape.values(extra[1:]).tolist() == [11.0 + k for k in range(7)], "a node that is no parameter moved"
ok()
