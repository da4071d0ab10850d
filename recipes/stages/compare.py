"""The compare stage: every comparison of the stage table (``table.COMPARISONS``) on every
task both of its evaluations have. Greedy verdicts are paired by problem (exact McNemar);
sampled evaluations (GRPO's settings, or a task's avg@k) pair per-problem pass rates
(exact sign test). Each comparison is
written once, in ``compare/<task>/<label>/``."""

from __future__ import annotations

import logging
from typing import Any

from aha.eval import write_report
from aha.eval.compare import compare_pass_rates
from aha.eval.files import read_json, write_json

from .runner import Context
from .table import COMPARISONS

log = logging.getLogger("aha")
PASS_RATES_FILE = "pass_rates.json"


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
