"""Every docstring example in the package runs and holds (they are the API docs)."""

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("aha.formats", "aha.rewards", "aha.eval", "aha.recipes")
SKIP = {"aha.recipes.cli"}


def _modules():
    for package in PACKAGES:
        yield package
        path = importlib.import_module(package).__path__
        for info in pkgutil.walk_packages(path, prefix=package + "."):
            if info.name not in SKIP:
                yield info.name


@pytest.mark.parametrize("name", sorted(_modules()))
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
