"""THE stage table: every stage of a run, in order, one record each. Planning, resume
checks, dispatch, the roles of a launch's processes, the comparisons and the report are
all read from here, so adding a stage is adding one record.

    eval-before -> sft -> eval-after-sft -> preflight -> grpo -> eval-after -> compare -> export
    -> verify-export -> publish -> report
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import Recipe

StageFn = Callable[[Any], "dict[str, Any]"]  # takes the runner's Context; returns what state.json records


def _always(recipe: Recipe) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One stage of a run."""

    name: str  # also the stage's folder in the run directory
    doc: str  # what it does, in one line (the notebook and `--dry-run` show it)
    run: Callable[[], StageFn]  # returns the stage function (imported late: stages import the training stack)
    enabled: Callable[[Recipe], bool] = _always  # does this recipe run it?
    # recipe sections or keys that this stage is the first to read (or a function of the recipe that says which)
    reads: tuple[str, ...] | Callable[[Recipe], tuple[str, ...]] = ()
    every_process: bool = False  # under a launch: True runs on every process (training), else on the main one
    needs_model: bool = True  # False: reads only what earlier stages wrote (no backend is made for it)
    evaluates: Callable[[Path, Recipe], str | None] | None = None  # an evaluation: the adapter it evaluates


def adapter_of(run_dir: Path, stage: Stage) -> Path:
    """Where a training stage saves its LoRA adapter."""
    return run_dir / stage.name / "adapter"


def final_adapter(run_dir: Path, recipe: Recipe) -> str:
    """The adapter the recipe ends with: GRPO's, or the warmup's when GRPO is off."""
    return str(adapter_of(run_dir, GRPO if recipe.grpo.enabled else SFT))


def _trains(recipe: Recipe) -> bool:
    return recipe.sft.enabled or recipe.grpo.enabled


def _stage(module: str, name: str) -> Callable[[], StageFn]:
    def load() -> StageFn:
        import importlib

        return getattr(importlib.import_module(f"aha.recipes.stages.{module}"), name)
    return load


GRPO_SAMPLING = ("grpo.temperature", "grpo.top_p", "grpo.top_k", "grpo.min_p")  # preflight.grpo_sampling's keys


def _evaluation_reads(recipe: Recipe) -> tuple[str, ...]:
    """After training, an evaluation also samples at GRPO's own settings when ``eval.sampled_k`` is set."""
    return ("eval.sampled_k", "eval.sampled_limit") + (GRPO_SAMPLING if recipe.eval.sampled_k else ())


EVAL_BEFORE = Stage("eval-before", "evaluate the model as it is (held-out problems, greedy)",
                    _stage("evaluate", "evaluate_stage"), enabled=lambda r: r.eval.enabled,
                    evaluates=lambda run_dir, recipe: None)
SFT = Stage("sft", "format warmup: supervised fine-tuning on worked solutions in the reasoning tags",
            _stage("training", "sft_stage"), enabled=lambda r: r.sft.enabled, reads=("sft",), every_process=True)
EVAL_AFTER_SFT = Stage("eval-after-sft", "evaluate after the warmup, so GRPO's own share can be measured",
                       _stage("evaluate", "evaluate_stage"),
                       enabled=lambda r: r.eval.enabled and r.eval.after_sft and r.sft.enabled and r.grpo.enabled,
                       reads=_evaluation_reads,
                       evaluates=lambda run_dir, recipe: str(adapter_of(run_dir, SFT)))
PREFLIGHT = Stage("preflight", "sample the starting policy exactly as GRPO will; stop on what would make GRPO "
                  "learn nothing", _stage("training", "preflight_stage"),
                  enabled=lambda r: r.grpo.enabled and r.grpo.preflight != "off", reads=("grpo",))
GRPO = Stage("grpo", "LoRA GRPO on the recipe's reward layers", _stage("training", "grpo_stage"),
             enabled=lambda r: r.grpo.enabled, reads=("grpo",), every_process=True)
EVAL_AFTER = Stage("eval-after", "evaluate the final adapter", _stage("evaluate", "evaluate_stage"),
                   enabled=lambda r: r.eval.enabled and _trains(r), reads=_evaluation_reads,
                   evaluates=lambda run_dir, recipe: final_adapter(run_dir, recipe))
COMPARE = Stage("compare", "paired before/after tests (exact McNemar; sign test on sampled pass rates)",
                _stage("compare", "compare_stage"), enabled=lambda r: r.eval.enabled and _trains(r),
                needs_model=False)
EXPORT = Stage("export", "the LoRA adapter (and merged weights, GGUF when the recipe asks)",
               _stage("export", "export_stage"), enabled=_trains, reads=("export",))
VERIFY_EXPORT = Stage("verify-export", "load what was exported as a user would (a fresh process) and check it answers "
                      "as the evaluated adapter did", _stage("verify", "verify_export_stage"),
                      enabled=lambda r: _trains(r) and r.eval.enabled and r.export.verify, needs_model=False)
PUBLISH = Stage("publish", "the model card (the Hub's format, with the evidence) in the exported folders, and the hub "
                "upload when the recipe asks", _stage("publish", "publish_stage"), enabled=_trains, needs_model=False)
REPORT = Stage("report", "report.md with every number, chart and the recipe as run", _stage("report", "report_stage"),
               needs_model=False)

STAGES: tuple[Stage, ...] = (EVAL_BEFORE, SFT, EVAL_AFTER_SFT, PREFLIGHT, GRPO, EVAL_AFTER, COMPARE, EXPORT,
                             VERIFY_EXPORT, PUBLISH, REPORT)
BY_NAME = {s.name: s for s in STAGES}


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two evaluation stages (``label`` names it in the report)."""

    label: str
    before: Stage
    after: Stage
    doc: str


COMPARISONS = (Comparison("overall", EVAL_BEFORE, EVAL_AFTER, "before vs after (the whole recipe)"),
               Comparison("sft", EVAL_BEFORE, EVAL_AFTER_SFT, "before vs after the warmup"),
               Comparison("grpo", EVAL_AFTER_SFT, EVAL_AFTER, "after the warmup vs after GRPO (GRPO's own share)"))


def plan(recipe: Recipe) -> list[str]:
    """The stages this recipe runs, in order.

    >>> from aha.recipes.config import recipe_from_dict
    >>> plan(recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, "grpo": {"enabled": False}}))[:4]
    ['eval-before', 'sft', 'eval-after', 'compare']
    """
    return [s.name for s in STAGES if s.enabled(recipe)]


def first_reader(key: str, recipe: Recipe) -> Stage:
    """The first stage that reads recipe value ``key`` (``section.key``) in ``recipe``; a value
    no stage names is read by the first stage."""
    section = key.split(".")[0]
    for stage in STAGES:
        reads = stage.reads(recipe) if callable(stage.reads) else stage.reads
        if key in reads or section in reads:
            return stage
    return STAGES[0]
