"""THE stage table: every stage of a run, in order. Each record is declared in its stage's
own module (``kernel.Stage``: its function, the recipe values it reads first, the files it
writes, how its results are read back); planning, resume checks, dispatch, the roles of a
launch's processes, the results reader and the report all read this list, so adding a stage
is one module and one line here.

    eval-before -> sft -> eval-after-sft -> preflight -> grpo (or rft in its place) -> eval-after -> compare
    -> export -> verify-export -> publish -> report
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.schema import Recipe
from . import kernel
from .compare import COMPARE, COMPARISONS, Comparison
from .evaluate import EVAL_AFTER, EVAL_AFTER_SFT, EVAL_BEFORE
from .export import EXPORT
from .kernel import Stage, adapter_of
from .publish import PUBLISH
from .report import REPORT
from .results import RunResults
from .training import GRPO, PREFLIGHT, RFT, SFT, final_adapter
from .verify import VERIFY_EXPORT

STAGES: tuple[Stage, ...] = (EVAL_BEFORE, SFT, EVAL_AFTER_SFT, PREFLIGHT, GRPO, RFT, EVAL_AFTER, COMPARE, EXPORT,
                             VERIFY_EXPORT, PUBLISH, REPORT)
BY_NAME = {s.name: s for s in STAGES}

__all__ = ["BY_NAME", "COMPARE", "COMPARISONS", "Comparison", "EVAL_AFTER", "EVAL_AFTER_SFT", "EVAL_BEFORE", "EXPORT",
           "GRPO", "PREFLIGHT", "PUBLISH", "REPORT", "RFT", "SFT", "STAGES", "Stage", "VERIFY_EXPORT", "adapter_of",
           "final_adapter", "first_reader", "plan", "read_run"]


def plan(recipe: Recipe) -> list[str]:
    """The stages this recipe runs, in order.

    >>> from aha.recipes.config import recipe_from_dict
    >>> plan(recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, "grpo": {"enabled": False}}))[:4]
    ['eval-before', 'sft', 'eval-after', 'compare']
    """
    return kernel.plan(STAGES, recipe)


def first_reader(key: str, recipe: Recipe) -> Stage:
    """The first stage that reads recipe value ``key`` (``section.key``) in ``recipe``; a value
    no stage names is read by the first stage."""
    return kernel.first_reader(STAGES, key, recipe)


def read_run(run_dir: str | Path, state: dict[str, Any] | None = None) -> RunResults:
    """A run folder's results, read back by every stage of the table."""
    return kernel.read_results(run_dir, STAGES, state)
