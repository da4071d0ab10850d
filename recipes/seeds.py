"""Seeds as a feature: ``aha run RECIPE --seeds N`` runs the whole recipe N times with every
seed moved (training, the data drawn, the generated evaluation problems, sampling), each
replicate into its own run folder under one parent, then pools every comparison across
replicates. One evaluation of a few hundred problems cannot tell a few points from a lucky
seed; replicates can.

Replicate ``r`` moves each seed by ``r * SEED_STEP``; replicate 0 is the recipe as written. This sits
above the runner: each replicate is one ``aha.recipes.run``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aha.eval.compare import pool, pool_pass_rates, pooled_markdown, pooled_pass_rates_markdown
from aha.eval.files import FolderLock, read_json, write_json

from .api import load_recipe, run
from .config.schema import Recipe, RecipeError
from .stages.table import COMPARISONS, EVAL_AFTER, EVAL_AFTER_SFT, EVAL_BEFORE, read_run

log = logging.getLogger("aha")
SEED_STEP = 1000
SEEDS_FILE = "seeds.json"


def parse_replicates(text: str) -> list[int]:
    """``3`` -> [0, 1, 2]; ``0,4,5`` -> those replicates.

    >>> parse_replicates("3"), parse_replicates("0, 4,5")
    ([0, 1, 2], [0, 4, 5])
    """
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        picked = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RecipeError(f"--seeds takes a count (3) or replicate numbers (0,4,5), not {text!r}") from None
    if not picked or min(picked) < 0 or len(set(picked)) != len(picked):
        raise RecipeError(f"--seeds {text}: replicate numbers are distinct and >= 0")
    return picked


def reseed(recipe: Recipe, replicate: int) -> list[str]:
    """The ``--set`` items that move every seed of ``recipe`` for ``replicate``: the recipe's
    seed (training, sampling), GRPO's own seed when set, the training data's seed, and the
    seed of each evaluation task whose problems are generated.

    >>> from aha.recipes.config import recipe_from_dict
    >>> reseed(recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}}), 2)[:2]
    ['seed=5407', 'data.seed=2001']
    """
    from aha.eval.tasks import GENERATED_TASKS

    step = replicate * SEED_STEP
    items = [f"seed={recipe.seed + step}", f"data.seed={recipe.data.seed + step}"]
    if recipe.grpo.seed is not None:
        items.append(f"grpo.seed={recipe.grpo.seed + step}")
    tasks = [{**asdict(t), "seed": t.seed + step} if t.task in GENERATED_TASKS else asdict(t) for t in recipe.eval.tasks]
    items.append("eval.tasks=" + json.dumps(tasks))  # JSON is YAML
    return items


def replicate_dir(parent: Path, replicate: int) -> Path:
    return parent / f"replicate-{replicate}"


def run_seeds(recipe_path: str | Path, overrides: list[str], replicates: list[int], parent: Path,
              stop_after: str | None = None, restart_from: str | None = None,
              base: Recipe | None = None) -> dict[str, Any]:
    """Run (or resume) every replicate, then write the pooled report; returns it. ``base``: the
    recipe with ``overrides``, when the caller has validated it already."""
    if base is None:
        base = load_recipe(recipe_path, overrides, out=replicate_dir(parent, replicates[0]))
    with FolderLock(parent):  # one `--seeds` command per parent folder; each replicate's run locks its own
        return _run_replicates(recipe_path, overrides, replicates, parent, base, stop_after, restart_from)


def _run_replicates(recipe_path: str | Path, overrides: list[str], replicates: list[int], parent: Path, base: Recipe,
                    stop_after: str | None, restart_from: str | None) -> dict[str, Any]:
    plan = {"recipe": base.name, "overrides": overrides, "seed_step": SEED_STEP,
            "replicates": {str(r): reseed(base, r) for r in replicates}}
    known = read_json(parent / SEEDS_FILE) if (parent / SEEDS_FILE).is_file() else None
    if known and (known.get("recipe"), known.get("overrides")) != (plan["recipe"], plan["overrides"]):
        raise RecipeError(f"{parent} holds replicates of another recipe or other --set values; re-run the same "
                          "command to resume, or pass --out NEW_DIR")
    if known:
        plan["replicates"] = {**known.get("replicates", {}), **plan["replicates"]}
    write_json(parent / SEEDS_FILE, plan)
    for r in replicates:
        folder = replicate_dir(parent, r)
        log.info("replicate %d of %s (%s): %s", r, base.name, ", ".join(plan["replicates"][str(r)][:2]), folder)
        recipe = load_recipe(recipe_path, overrides + plan["replicates"][str(r)], out=folder)
        run(recipe, folder, stop_after=stop_after, restart_from=restart_from)
    return write_seeds_report(parent, [int(r) for r in plan["replicates"]], base)


def write_seeds_report(parent: Path, replicates: list[int], recipe: Recipe) -> dict[str, Any]:
    """``seeds.md`` and ``seeds_report.json``: per replicate, then every comparison pooled."""
    import yaml

    runs = {r: read_run(replicate_dir(parent, r)) for r in sorted(replicates)
            if (replicate_dir(parent, r) / "state.json").is_file()}
    labels = [f"seed {r}" for r in runs]
    lines = [f"# {recipe.name}: {len(runs)} replicates, every seed moved", "",
             f"Replicate r moves each seed by r x {SEED_STEP} (replicate 0 is the recipe as written). Primary "
             f"metric: {recipe.eval.metric}.", "", "## Each replicate", "",
             "| replicate | seeds | " + " | ".join(s.name for s in (EVAL_BEFORE, EVAL_AFTER_SFT, EVAL_AFTER)) + " |",
             "|---|---|---|---|---|"]
    for r, res in runs.items():
        seeds = f"seed {res.recipe.get('seed')}, data {res.recipe.get('data', {}).get('seed')}"
        cells = []
        for stage in (EVAL_BEFORE, EVAL_AFTER_SFT, EVAL_AFTER):
            tasks = {k: v for k, v in res.evaluations.get(stage.name, {}).items() if not k.endswith("-sampled")}
            cells.append(", ".join(f"{k} {v['accuracy_' + recipe.eval.metric]:.1%}" for k, v in tasks.items()) or "-")
        lines.append(f"| {r} | {seeds} | " + " | ".join(cells) + " |")
    pooled: dict[str, Any] = {"replicates": list(runs), "greedy": {}, "sampled": {}}
    keys = sorted({k for res in runs.values() for k in res.comparisons})
    for key in keys:
        reports = [res.comparisons[key] for res in runs.values() if key in res.comparisons]
        if len(reports) < len(runs):
            continue
        result = pool(reports)
        pooled["greedy"][key] = result
        doc = next((c.doc for c in COMPARISONS if key.endswith("/" + c.label)), "")
        lines += ["", f"## {key}: {doc}", "", pooled_markdown(result, labels).strip()]
    for key in sorted({k for res in runs.values() for k in res.sampled}):
        reports = [res.sampled[key] for res in runs.values() if key in res.sampled]
        if len(reports) < len(runs):
            continue
        s = pool_pass_rates(reports)
        pooled["sampled"][key] = s
        lines += ["", f"## {key}: sampled pass rate (k={s['k']}), pooled sign test", "",
                  pooled_pass_rates_markdown(s, labels).strip()]
    lines += ["", "## The recipe (replicate 0)", "", "```yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False).strip(),
              "```"]
    (parent / "seeds.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_json(parent / "seeds_report.json", pooled)
    log.info("seeds report: %s", parent / "seeds.md")
    return pooled
