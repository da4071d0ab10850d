"""The run's evidence as the report, the model cards and the Python API show it: the result
tables (evaluations, paired comparisons, sampled pass rates), the reward curves during GRPO, and
the export verification in words."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aha.eval import metrics as names

from .evaluate import SAMPLED_SUFFIX
from .results import RunResults
from .compare import COMPARISONS


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` points (the first points average what exists).

    >>> moving_average([0, 2, 4, 6], 2)
    [0.0, 1.0, 3.0, 5.0]
    """
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def _pass_rate_key() -> str:
    from ..training.trainers import PASS_RATE_METRIC

    return PASS_RATE_METRIC


def reward_curves(log_history: list[dict[str, Any]], path: Path, window: int | None = None) -> bool:
    """PNG of each reward layer's mean per logged step (faint) with its moving average (bold),
    and beside it the share of completions that are right; False when nothing was logged.
    A few prompts per step make the raw points swing; the moving average shows the trend."""
    series: dict[str, list[tuple[int, float]]] = {}
    pass_key = _pass_rate_key()
    def scored(value: Any) -> bool:  # TRL logs None (or NaN) for a layer that scored None on every completion
        return isinstance(value, (int, float)) and not math.isnan(value)

    for row in log_history:
        for key, value in row.items():
            if key.startswith("rewards/") and key.endswith("/mean") and scored(value):
                series.setdefault(key.split("/")[1], []).append((row.get("step", 0), value))
        if scored(row.get("reward")):
            series.setdefault("total (weighted)", []).append((row.get("step", 0), row["reward"]))
    passes = [(row.get("step", 0), row[pass_key]) for row in log_history if scored(row.get(pass_key))]
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = max(len(points) for points in series.values())
    window = window or max(3, steps // 5)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for i, (name, points) in enumerate(series.items()):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        colour = f"C{i}"
        ax.plot(xs, ys, color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(xs, moving_average(ys, window), color=colour, label=name,
                linewidth=2.6 if name.startswith("total") else 1.5)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_title(f"Rewards per layer (faint: per step; bold: moving average of {window})", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    if passes:
        xs, ys = [p[0] for p in passes], [100 * p[1] for p in passes]
        ax2.plot(xs, ys, color="#2f6fde", alpha=0.25, linewidth=0.8)
        ax2.plot(xs, moving_average(ys, window), color="#2f6fde", linewidth=2.2)
        ax2.set_ylim(0, 100)
    ax2.set_xlabel("GRPO step")
    ax2.set_ylabel("% of sampled completions")
    ax2.set_title("Format followed and answer right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def result_tables(results: RunResults) -> list[str]:
    """The evaluations, the paired comparisons and the sampled comparison, as markdown
    (the report's core; the Python API's RunResult shows the same in a notebook)."""
    lines: list[str] = []
    if results.evaluations:
        lines += ["", "## Evaluations", "", "| stage | task | engine | problems | format | strict | lenient | "
                  "math-verify | truncated | mean tokens |", "|---|---|---|---|---|---|---|---|---|---|"]
        for stage, tasks in results.evaluations.items():
            for task, r in tasks.items():
                if task.endswith(SAMPLED_SUFFIX) or names.pass_at(1, "strict") in r:  # sampled: tables of their own
                    continue
                engine = results.engines.get(stage, {}).get(task, "?")
                lines.append(f"| {stage} | {task} | {engine} | {r[names.PROBLEMS]} | {r[names.FORMAT_COMPLIANCE]:.1%} | "
                             f"{r[names.accuracy('strict')]:.1%} | {r[names.accuracy('lenient')]:.1%} | "
                             f"{r[names.accuracy('math_verify')]:.1%} | {r[names.TRUNCATION_RATE]:.1%} | "
                             f"{r[names.MEAN_TOKENS]:.1f} |")
    asked = {task: a for task, a in results.asked.items() if not task.endswith(SAMPLED_SUFFIX)}
    if asked:
        lines += ["", "How each task was asked and graded (the instruction as the recipe's format applies it):", ""]
        lines += [f"- {task}: grader {a.get('grader', 'numeric')}; instruction "
                  f"{repr(a['instruction']) if a.get('instruction') else 'none (the format says where the answer goes)'}"
                  for task, a in asked.items()]
    avg = [(stage, task, r) for stage, tasks in results.evaluations.items() for task, r in tasks.items()
           if not task.endswith(SAMPLED_SUFFIX) and names.pass_at(1, "strict") in r]
    if avg:
        lines += ["", "## avg@k: k samples per problem at the task's own settings", "",
                  "avg@k is the mean per-problem pass rate (format followed and answer right), with a 95% bootstrap "
                  "interval over problems.", "", "| stage | task | problems | k | avg@k strict [95% CI] | pass@k | "
                  "maj@k |", "|---|---|---|---|---|---|---|"]
        for stage, task, r in avg:
            k = max(int(m.split("@")[1].split("_")[0]) for m in r if m.startswith("pass@"))
            low, high = r[names.interval(names.pass_at(1, "strict"))]
            lines.append(f"| {stage} | {task} | {r[names.PROBLEMS]} | {k} | {r[names.pass_at(1, 'strict')]:.1%} "
                         f"[{low:.1%}, {high:.1%}] | {r[names.pass_at(k, 'strict')]:.1%} | {r[names.maj_at(k)]:.1%} |")
    if results.comparisons:
        lines += ["", "## Paired comparisons (exact McNemar test)", "",
                  "| task / share | metric | before | after | fixed | broken | p |", "|---|---|---|---|---|---|---|"]
        for key, pair in results.comparisons.items():
            for m in ("format_ok", "strict", "lenient"):
                r = pair["metrics"][m]
                lines.append(f"| {key} | {m} | {r['before']:.1%} | {r['after']:.1%} | {r['fixed']} | {r['broken']} | "
                             f"{r['p_value']:.3g} |")
        lines += ["", "; ".join(f"`{c.label}` is {c.doc}" for c in COMPARISONS) + "."]
    if results.sampled:
        lines += ["", "## Sampled accuracy at GRPO's temperature", "",
                  "Each problem answered k times (`-sampled`: with GRPO's own sampling settings; `-avg@k`: with the "
                  "task's); a problem's pass rate is the share of its k answers that are right. Paired by problem, "
                  "exact sign test on which problems went up or down.", "",
                  "| task / share | k | problems | mean pass rate before | after | up | down | p |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, r in results.sampled.items():
            lines.append(f"| {key} | {r['k']} | {r['problems']} | {r['before']:.1%} | {r['after']:.1%} | "
                         f"{r['improved']} | {r['worsened']} | {r['p_value']:.3g} |")
    return lines


def verification_text(v: dict[str, Any]) -> str:
    parts = [f"export/{name}: {r['identical_texts']} of {r['problems']} answers the same text as the evaluated "
             f"adapter's, {r['same_verdicts']} the same verdict (strict {r['strict_export']:.1%} vs "
             f"{r['strict_adapter']:.1%})" + (f"; where texts part: {r['reason']}" if r.get("differences") else "")
             for name, r in v["artifacts"].items()]
    engines = v.get("engine", "hf"), v.get("verify_engine", "hf")
    how = (f" (the run evaluated on {engines[0]}, this check on {engines[1]}: the adapter judged on verdicts, the "
           f"exports against its {engines[1]} answers)" if engines[0] != engines[1] else f" on {engines[1]}")
    return (f"Loaded as a user loads them, in a fresh process{how}, on the first problems of `{v['task']}` at "
            f"{v['dtype']}: " + "; ".join(parts) + ".")
