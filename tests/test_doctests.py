"""Every docstring example in the package runs and holds (they are the API docs)."""

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("aha.formats", "aha.rewards", "aha.eval", "aha.recipes")
SKIP = {"aha.recipes.cli"}
# Modules with no example, and why: every other module documents its behaviour with one that runs.
NO_EXAMPLES = {
    "aha.formats.builtin": "data: the built-in formats (each is exercised through aha.formats' examples)",
    "aha.rewards.model": "needs a sequence-classification model on disk (tests/test_own_task.py builds one)",
    "aha.eval.runner": "needs a model to generate (tests/test_eval.py)",
    "aha.recipes.api": "runs recipes (tests/test_recipes.py, the notebook test)",
    "aha.recipes.config": "a package that re-exports its modules, whose examples run",
    "aha.recipes.launch": "a package (its modules' examples run)",
    "aha.recipes.stages": "a package (its modules' examples run)",
    "aha.recipes.training": "a package (its modules' examples run)",
    "aha.recipes.stages.compare": "the compare stage: reads a run's evaluations (tests/test_recipes.py end to end)",
    "aha.recipes.stages.export": "the export stage: copies and merges a trained adapter (end-to-end tests)",
    "aha.recipes.stages.report": "the report stage: writes a run's report (end-to-end tests)",
    "aha.recipes.stages.training": "the training stages: need a model (end-to-end tests)",
    "aha.recipes.training.backends": "training backends: load models (end-to-end tests, tests/test_gpu_path.py)",
    "aha.recipes.training.export": "merges and uploads models (tests/test_recipes.py, tests/test_gpu_path.py)",
    "aha.recipes.training.vllm_sync": "patches a running vLLM engine (tests/test_vllm.py)",
}


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
    if name in NO_EXAMPLES:
        assert result.attempted == 0, f"{name} has examples now: take it off NO_EXAMPLES"
    else:
        assert result.attempted > 0, f"{name} has no example: show its behaviour in a docstring, or say why not"
