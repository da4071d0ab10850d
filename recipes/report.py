"""The run report: what ran (config, versions, timings), how rewards moved during GRPO
(one curve per reward layer), and the paired before/after tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .config import Recipe


def reward_curves(log_history: list[dict[str, Any]], path: Path) -> bool:
    """PNG of each reward layer's mean per logged step; False when nothing was logged."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in log_history:
        for key, value in row.items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                series.setdefault(key.split("/")[1], []).append((row.get("step", 0), value))
        if "reward" in row:
            series.setdefault("total (weighted)", []).append((row.get("step", 0), row["reward"]))
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=name,
                linewidth=2.5 if name.startswith("total") else 1.2)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_title("Rewards per layer during GRPO")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_run_report(run_dir: Path, recipe: Recipe, state: dict[str, Any], versions: dict[str, str]) -> Path:
    lines = [f"# Run report: {recipe.name}", "", f"Run directory: `{run_dir}`", "", "## Stages", "",
             "| stage | seconds | notes |", "|---|---|---|"]
    for stage, info in state["stages"].items():
        notes = ", ".join(f"{k} {v}" for k, v in info.items() if k in ("examples", "prompts", "steps"))
        lines.append(f"| {stage} | {info.get('seconds', '')} | {notes} |")
    evals = [(s, info["results"]) for s, info in state["stages"].items() if s.startswith("eval-")]
    if evals:
        lines += ["", "## Evaluations", "", "| stage | task | problems | format | strict | lenient | math-verify | "
                  "truncated | mean tokens |", "|---|---|---|---|---|---|---|---|---|"]
        for stage, results in evals:
            for task, r in results.items():
                lines.append(f"| {stage} | {task} | {r['problems']} | {r['format_compliance']:.1%} | "
                             f"{r['accuracy_strict']:.1%} | {r['accuracy_lenient']:.1%} | "
                             f"{r['accuracy_math_verify']:.1%} | {r['truncation_rate']:.1%} | "
                             f"{r['mean_completion_tokens']:.1f} |")
    comparisons = state["stages"].get("compare", {}).get("comparisons", {})
    if comparisons:
        lines += ["", "## Paired comparisons (exact McNemar test)", "",
                  "| task / share | metric | before | after | fixed | broken | p |", "|---|---|---|---|---|---|---|"]
        for key, metrics in comparisons.items():
            for m in ("format_ok", "strict", "lenient"):
                r = metrics[m]
                lines.append(f"| {key} | {m} | {r['before']:.1%} | {r['after']:.1%} | {r['fixed']} | {r['broken']} | "
                             f"{r['p_value']:.3g} |")
        lines += ["", "`overall` is before vs after; `sft` is before vs after the warmup; `grpo` is after the warmup "
                  "vs after GRPO (GRPO's own share)."]
    history = run_dir / "grpo" / "log_history.json"
    if history.is_file() and reward_curves(json.loads(history.read_text()), run_dir / "reward_curves.png"):
        lines += ["", "## Rewards during GRPO", "", "![reward curves](reward_curves.png)"]
    warnings = state["stages"].get("grpo", {}).get("warnings") or []
    if warnings:
        lines += ["", "## Warnings raised during GRPO", ""] + [f"- {w}" for w in warnings]
    lines += ["", "## Versions", "", "```", yaml.safe_dump(versions, sort_keys=False).strip(), "```",
              "", "## Recipe (as run)", "", "```yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False).strip(), "```"]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
