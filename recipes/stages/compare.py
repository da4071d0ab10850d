"""The compare stage: every comparison (:data:`COMPARISONS`) on every task both of its
evaluations have. Greedy verdicts are paired by problem (exact McNemar);
sampled evaluations (GRPO's settings, or a task's avg@k) pair per-problem pass rates
(exact sign test). Each comparison is
written once, in ``compare/<task>/<label>/``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.eval import write_report
from aha.eval.compare import COMPARE_FILE, compare_pass_rates
from aha.eval.files import read_json, write_json

from .evaluate import EVAL_AFTER, EVAL_AFTER_SFT, EVAL_BEFORE
from .kernel import Context, Stage
from .results import RunResults, read_json_if_there
from .training import trains

log = logging.getLogger("aha")
PASS_RATES_FILE = "pass_rates.json"


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two evaluation stages (``label`` names it in the report)."""

    label: str
    before: Stage
    after: Stage
    doc: str


COMPARISONS = (Comparison("overall", EVAL_BEFORE, EVAL_AFTER, "before vs after (the whole recipe)"),
               Comparison("sft", EVAL_BEFORE, EVAL_AFTER_SFT, "before vs after the warmup"),
               Comparison("grpo", EVAL_AFTER_SFT, EVAL_AFTER, "after the warmup vs after GRPO, or RFT in its place (its own share)"))


def compare_stage(ctx: Context) -> dict[str, Any]:
    run, metric = ctx.run, ctx.recipe.eval.metric
    written = []
    for c in COMPARISONS:
        before, after = run.path(c.before.name), run.path(c.after.name)
        if not (before.is_dir() and after.is_dir()):
            continue
        for key in sorted(p.name for p in before.iterdir() if (p / "summary.json").is_file()):
            if not (after / key / "summary.json").is_file():
                continue
            out = ctx.path(key, c.label)
            if read_json(before / key / "summary.json")["config"]["sampling"]["n"] > 1:
                r = compare_pass_rates(before / key, after / key, metric=metric)
                out.mkdir(parents=True, exist_ok=True)
                write_json(out / PASS_RATES_FILE, r)
                log.info("compare %s %s (sampled, k=%d): mean pass rate %.1f%% -> %.1f%%, %d problems up / %d down, "
                         "sign test p = %.3g", key, c.label, r["k"], 100 * r["before"], 100 * r["after"],
                         r["improved"], r["worsened"], r["p_value"])
            else:
                primary = write_report(before / key, after / key, out, metric=metric)["metrics"][metric]
                log.info("compare %s %s (%s -> %s): %s %.1f%% -> %.1f%%, McNemar p = %.3g", key, c.label,
                         c.before.name, c.after.name, metric, 100 * primary["before"], 100 * primary["after"],
                         primary["p_value"])
            written.append(f"{key}/{c.label}")
    return {"comparisons": written}


def _read_comparisons(run_dir: Path, record: dict[str, Any] | None, out: RunResults) -> None:
    for key in (record or {}).get("comparisons", []):
        folder = run_dir / COMPARE.name / key
        pair = read_json_if_there(folder / COMPARE_FILE)
        if pair:
            metrics = {m: {k: v for k, v in r.items() if not k.endswith("_ids")} for m, r in pair["metrics"].items()}
            out.comparisons[key] = {**pair, "metrics": metrics}
        rates = read_json_if_there(folder / PASS_RATES_FILE)
        if rates:
            out.sampled[key] = rates


COMPARE = Stage("compare", "paired before/after tests (exact McNemar; sign test on sampled pass rates)", compare_stage,
                writes=("compare/**",), enabled=lambda r: r.eval.enabled and trains(r), needs_model=False,
                results=_read_comparisons)
