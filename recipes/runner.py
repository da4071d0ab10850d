"""``aha run``: the stages of a recipe, in order, into one run directory.

    eval-before -> sft -> eval-after-sft -> grpo -> eval-after -> compare -> export -> report

Each finished stage is recorded in ``state.json``; re-running the same command skips
finished stages and resumes training from its last checkpoint. A run directory belongs
to one recipe: running a changed recipe into it is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from aha.eval.runner import versions
from aha.formats import get_format

from .config import Recipe, RecipeError, _resolve

log = logging.getLogger("aha")
STATE_FILE = "state.json"


def plan(recipe: Recipe) -> list[str]:
    """The stages this recipe runs, in order."""
    trains = recipe.sft.enabled or recipe.grpo.enabled
    ev = recipe.eval.enabled
    stages = ["eval-before"] if ev else []
    stages += ["sft"] if recipe.sft.enabled else []
    stages += ["eval-after-sft"] if ev and recipe.eval.after_sft and recipe.sft.enabled and recipe.grpo.enabled else []
    stages += ["grpo"] if recipe.grpo.enabled else []
    stages += ["eval-after", "compare"] if ev and trains else []
    stages += ["export"] if trains else []
    return stages + ["report"]


def recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class Run:
    """One run directory: its recipe, its state, its log."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None = None):
        self.recipe, self.dir, self.recipe_dir = recipe, Path(out_dir), recipe_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / STATE_FILE
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        digest = recipe_hash(recipe)
        if self.state.get("recipe_hash", digest) != digest:
            raise RecipeError(f"{self.dir} holds a run of a different recipe (or different --set values); "
                              "re-run the same command to resume, or pass --out NEW_DIR")
        self.state.setdefault("recipe_hash", digest)
        self.state.setdefault("stages", {})
        (self.dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        self._save()

    def _save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    def done(self, stage: str) -> bool:
        return stage in self.state["stages"]

    def finish(self, stage: str, seconds: float, result: dict[str, Any]) -> None:
        self.state["stages"][stage] = {"seconds": round(seconds, 1), **result}
        self._save()

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)


def _setup_logging(run_dir: Path) -> None:
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(run_dir / "run.log")):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False


def run_recipe(recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None = None,
               stop_after: str | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of ``recipe`` into ``out_dir``; returns the state."""
    from .backends import make_backend
    from .models import pick_backend

    pick_backend(recipe.model.backend)  # "unsloth without a GPU" is refused before the run directory is touched
    run = Run(recipe, out_dir, recipe_dir)
    _setup_logging(run.dir)
    stages = plan(recipe)
    if stop_after and stop_after not in stages:
        raise RecipeError(f"--stop-after {stop_after}: not a stage of this recipe ({', '.join(stages)})")
    todo = [s for s in stages if not run.done(s)]
    log.info("run %s in %s: stages %s%s", recipe.name, run.dir, " -> ".join(stages),
             f" (done already: {', '.join(s for s in stages if run.done(s))})" if len(todo) < len(stages) else "")
    fmt = get_format(_resolve(recipe.format, recipe_dir))
    backend = make_backend(recipe, run, fmt) if any(s not in ("compare", "report") for s in todo) else None
    for stage in stages:
        if run.done(stage):
            continue
        log.info("stage %s", stage)
        started = time.time()
        result = STAGE_FUNCS[stage](run, backend, fmt)
        run.finish(stage, time.time() - started, result or {})
        log.info("stage %s done in %.1f s", stage, time.time() - started)
        if stage == stop_after:
            break
    if backend is not None:
        backend.close()
    return run.state


# ----- stages ------------------------------------------------------------------------------------------
def final_adapter(run: Run) -> str:
    stage = "grpo" if run.recipe.grpo.enabled else "sft"
    return str(run.path(stage, "adapter"))


def _adapter_for(run: Run, stage: str) -> str | None:
    return {"eval-before": None, "eval-after-sft": str(run.path("sft", "adapter")),
            "eval-after": final_adapter(run)}[stage]


def _eval(stage: str):
    def do(run: Run, backend: Any, fmt: Any) -> dict[str, Any]:
        from aha.eval import Sampling, evaluate

        from .data import eval_problems

        recipe = run.recipe
        sampling = Sampling(max_new_tokens=recipe.eval.max_new_tokens, seed=recipe.seed)
        adapter = _adapter_for(run, stage)
        generator = backend.generator(adapter)
        results = {}
        for key, problems in eval_problems(recipe).items():
            summary = evaluate(generator, problems, run.path(stage, key), fmt, sampling,
                               adapter=adapter if getattr(generator, "name", "") == "vllm" else None,
                               meta={"model": recipe.model.name, "task": key, "stage": stage, "adapter": adapter})
            r = summary["results"]
            log.info("%s %s: format %.1f%%, strict %.1f%%, lenient %.1f%%, truncated %.1f%% (%d problems)", stage, key,
                     100 * r["format_compliance"], 100 * r["accuracy_strict"], 100 * r["accuracy_lenient"],
                     100 * r["truncation_rate"], r["problems"])
            results[key] = {k: r[k] for k in ("problems", "format_compliance", "accuracy_strict", "accuracy_lenient",
                                              "accuracy_math_verify", "truncation_rate", "mean_completion_tokens")}
        return {"results": results}
    return do


def _sft(run: Run, backend: Any, fmt: Any) -> dict[str, Any]:
    return backend.sft(run.path("sft"))


def _grpo(run: Run, backend: Any, fmt: Any) -> dict[str, Any]:
    sft_adapter = str(run.path("sft", "adapter")) if run.recipe.sft.enabled else None
    return backend.grpo(run.path("grpo"), sft_adapter)


COMPARISONS = (("overall", "eval-before", "eval-after"), ("sft", "eval-before", "eval-after-sft"),
               ("grpo", "eval-after-sft", "eval-after"))


def _compare(run: Run, backend: Any, fmt: Any) -> dict[str, Any]:
    from aha.eval import write_report

    out: dict[str, Any] = {}
    for key in sorted(p.name for p in run.path("eval-before").iterdir() if p.is_dir()):
        for label, before, after in COMPARISONS:
            if not (run.path(before, key).is_dir() and run.path(after, key).is_dir()):
                continue
            report = write_report(run.path(before, key), run.path(after, key), run.path("compare", key, label),
                                  metric=run.recipe.eval.metric)
            out[f"{key}/{label}"] = {m: {k: v for k, v in r.items() if not k.endswith("_ids")}
                                     for m, r in report["metrics"].items()}
            primary = report["metrics"][run.recipe.eval.metric]
            log.info("compare %s %s (%s -> %s): %s %.1f%% -> %.1f%%, McNemar p = %.3g", key, label, before, after,
                     run.recipe.eval.metric, 100 * primary["before"], 100 * primary["after"], primary["p_value"])
    return {"comparisons": out}


def _export(run: Run, backend: Any, fmt: Any) -> dict[str, Any]:
    return backend.export(final_adapter(run), run.path("export"))


def _report(run: Run, backend: Any, fmt: Any) -> dict[str, Any]:
    from .report import write_run_report

    path = write_run_report(run.dir, run.recipe, run.state, versions())
    log.info("report: %s", path)
    return {"path": str(path)}


STAGE_FUNCS = {"eval-before": _eval("eval-before"), "sft": _sft, "eval-after-sft": _eval("eval-after-sft"),
               "grpo": _grpo, "eval-after": _eval("eval-after"), "compare": _compare, "export": _export,
               "report": _report}
