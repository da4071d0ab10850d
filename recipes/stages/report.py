"""The run report: what ran (config, versions, timings, peak memory), the evidence (``evidence.py``: the
paired before/after tables, the reward curves), the preflight, GRPO's warnings, and the recipe as run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..config.schema import Recipe
from .evidence import result_tables, reward_curves, verification_text
from .kernel import Context, Stage
from .results import RunResults

REPORT_FILE = "report.md"
CURVES_FILE = "reward_curves.png"


def stage_rows(stages: dict[str, dict[str, Any]]) -> list[str]:
    """The stage table's rows: time, host memory, GPU memory (allocated / reserved) and counts."""
    rows = []
    for stage, info in stages.items():
        notes = ", ".join(f"{k} {v}" for k, v in info.items() if k in ("examples", "prompts", "steps"))
        gpu = (f"{info['peak_gpu_allocated_gib']} / {info.get('peak_gpu_reserved_gib', '')}"
               if "peak_gpu_allocated_gib" in info else "no GPU")
        rows.append(f"| {stage} | {info.get('seconds', '')} | {info.get('peak_memory_gib', '')} | {gpu} | {notes} |")
    return rows


def write_run_report(results: RunResults, recipe: Recipe, versions: dict[str, str]) -> Path:
    run_dir = results.run_dir
    lines = [f"# Run report: {recipe.name}", "", f"Run directory: `{run_dir}`", "", "## Stages", "",
             "| stage | seconds | peak memory (GiB) | peak GPU memory, allocated / reserved (GiB) | notes |",
             "|---|---|---|---|---|", *stage_rows(results.stages)]
    lines += result_tables(results)
    if results.preflight:
        from ..training.preflight import to_markdown as preflight_markdown

        lines += ["", "## GRPO preflight (will it learn?)", ""] + preflight_markdown(results.preflight)
    if results.rft:
        from ..training.rft import to_markdown as rft_markdown

        lines += ["", "## Rejection-sampling fine-tuning (in GRPO's place)", ""] + rft_markdown(results.rft)
    if results.grpo_log and reward_curves(results.grpo_log, run_dir / CURVES_FILE):
        lines += ["", "## Rewards during GRPO", "", f"![reward curves]({CURVES_FILE})"]
    warnings = results.training.get("warnings") or []
    if warnings:
        lines += ["", "## Warnings raised during GRPO", ""] + [f"- {w}" for w in warnings]
    reward_errors = results.training.get("reward_errors") or {}
    if reward_errors:
        lines += ["", "## Reward errors during GRPO", "",
                  "Completions on which a reward raised; they scored None for it (first traceback in run.log):", ""]
        lines += [f"- {name}: {count}" for name, count in reward_errors.items()]
    if results.verification:
        lines += ["", "## Export verification", "", verification_text(results.verification)]
    lines += ["", "## Versions", "", "```", yaml.safe_dump(versions, sort_keys=False).strip(), "```",
              "", "## Recipe (as run)", "", "```yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False).strip(), "```"]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def report_stage(ctx: Context) -> dict[str, Any]:
    import logging

    from aha.eval.runner import versions

    path = write_run_report(ctx.results(), ctx.recipe, versions())
    logging.getLogger("aha").info("report: %s", path)
    return {"path": str(path)}


REPORT = Stage("report", "report.md with every number, chart and the recipe as run", report_stage,
               writes=(REPORT_FILE, CURVES_FILE), needs_model=False)
