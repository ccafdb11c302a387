"""Shared fixtures and settings for pyrograd's tests.

The tests import the installed package (there is no tests/__init__.py), so
they always exercise the compiled _pyrograd_core module.
"""
import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

import pyrograd as pg

settings.register_profile(
    "default",
    deadline=None,  # the first call of a sweep may allocate; timing is not under test
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=400)
settings.register_profile("stress", parent=settings.get_profile("default"), max_examples=20_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (minutes, gigabytes)")


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run only with --runslow or a -m expression that names them."""
    if config.getoption("--runslow") or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (or -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tape():
    return pg.Tape()


@pytest.fixture
def dot_program():
    """Path of graphviz's `dot`, or skip."""
    path = shutil.which("dot")
    if path is None:
        pytest.skip("graphviz's dot program is not installed")
    return path


def central_difference(tape_output, leaf, x0, h=None):
    """d output / d leaf at x0 by a central difference, moving the leaf with set().

    Uses pyrograd's own forward evaluation, so it checks that derive and
    backprop agree with the values the tape computes.  Restores the leaf.
    """
    h = 1e-5 * max(1.0, abs(x0)) if h is None else h
    leaf.set(x0 + h)
    up = tape_output.value
    leaf.set(x0 - h)
    down = tape_output.value
    leaf.set(x0)
    return (up - down) / (2 * h)


@pytest.fixture
def fd():
    return central_difference
