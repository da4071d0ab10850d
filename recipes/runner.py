"""``aha run``: the stages of a recipe, in order, into one run directory.

    eval-before -> sft -> eval-after-sft -> preflight -> grpo -> eval-after -> compare -> export -> report

Each finished stage is recorded in ``state.json``; re-running the same command skips
finished stages and resumes training from its last checkpoint. A run directory belongs
to one recipe: a change that would alter a stage already run is refused rather than
mixed; a change to sections only later stages read (say ``grpo.*`` after a preflight
that stopped the run) is taken, and logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aha.eval.runner import versions
from aha.formats import get_format

from .distributed import is_main, on_main, rank, world_size
from .schema import Recipe, RecipeError, resolve_path
from .validate import global_batch_line

if TYPE_CHECKING:  # the backends import the training stack; the runner needs only their shape
    from .backends import TrainingBackend

log = logging.getLogger("aha")
STATE_FILE = "state.json"


# Stages every process of a launch runs (TRL and accelerate split the work); the rest run on the main process.
EVERY_PROCESS = ("sft", "grpo")
ALL_STAGES = ("eval-before", "sft", "eval-after-sft", "preflight", "grpo", "eval-after", "compare", "export", "report")
# The first stage that reads a recipe section (or key); what is not named here is read by every stage.
FIRST_STAGE_READING = {"sft": "sft", "grpo": "preflight", "export": "export", "eval.sampled_k": "eval-after-sft",
                       "eval.sampled_limit": "eval-after-sft"}


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``section`` or ``section.key`` for every value that differs (one level into sections).

    >>> _changed_keys({"a": 1, "b": {"x": 1, "y": 2}}, {"a": 1, "b": {"x": 1, "y": 3}})
    ['b.y']
    """
    def flat(section: Any) -> Any:  # a stage's TRL fields read as its own keys (grpo.learning_rate)
        if isinstance(section, dict) and isinstance(section.get("trl"), dict):
            return {**{k: v for k, v in section.items() if k != "trl"}, **section["trl"]}
        return section

    out = []
    for key in sorted(set(old) | set(new)):
        a, b = flat(old.get(key)), flat(new.get(key))
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def _with_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """A stored recipe with the keys of today's schema it lacks filled in at their defaults.

    >>> _with_defaults({"model": {"name": "m"}})["model"]["vllm_mode"]
    'colocate'
    """
    import dataclasses

    defaults = dataclasses.asdict(Recipe())
    out = {**defaults, **old}
    for key, section in defaults.items():
        if isinstance(section, dict) and isinstance(old.get(key), dict):
            out[key] = {**section, **old[key]}
    return out


def plan(recipe: Recipe) -> list[str]:
    """The stages this recipe runs, in order."""
    trains = recipe.sft.enabled or recipe.grpo.enabled
    ev = recipe.eval.enabled
    stages = ["eval-before"] if ev else []
    stages += ["sft"] if recipe.sft.enabled else []
    stages += ["eval-after-sft"] if ev and recipe.eval.after_sft and recipe.sft.enabled and recipe.grpo.enabled else []
    stages += ["preflight"] if recipe.grpo.enabled and recipe.grpo.preflight != "off" else []
    stages += ["grpo"] if recipe.grpo.enabled else []
    stages += ["eval-after", "compare"] if ev and trains else []
    stages += ["export"] if trains else []
    return stages + ["report"]


def recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class Run:
    """One run directory: its recipe, its state, its log."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None = None,
                 restart_from: str | None = None):
        self.recipe, self.dir, self.recipe_dir = recipe, Path(out_dir), recipe_dir
        self.changed: list[str] = []  # recipe values changed since the stages already done (none of which read them)
        self.writes = True
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / STATE_FILE
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        digest = recipe_hash(recipe)
        self.state.setdefault("stages", {})
        if restart_from:
            self._forget_from(restart_from)
        if self.state.get("recipe_hash", digest) != digest:
            self._accept_change(recipe.to_dict())
        self.state["recipe_hash"] = digest
        self.state["recipe"] = recipe.to_dict()
        (self.dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        self._save()

    @classmethod
    def follow(cls, recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None = None) -> Run:
        """The run folder as another process of a launch sees it, after the main process set
        it up: it reads the state and never writes it."""
        run = cls.__new__(cls)
        run.recipe, run.dir, run.recipe_dir, run.changed, run.writes = recipe, Path(out_dir), recipe_dir, [], False
        run.state_path = run.dir / STATE_FILE
        run.state = json.loads(run.state_path.read_text())
        return run

    def check_same_recipe(self) -> None:
        """Raise (RecipeError) if this folder's finished stages read values the recipe now changes."""
        if self.state.get("recipe_hash") != recipe_hash(self.recipe):
            self._accept_change(self.recipe.to_dict())

    def _forget_from(self, stage: str) -> None:
        """Drop ``stage`` and every later one, with their outputs, so they run again (say GRPO
        with another seed, from the same warmup). Earlier stages and their outputs stay."""
        later = ALL_STAGES[ALL_STAGES.index(stage):]
        for name in later:
            self.state["stages"].pop(name, None)
            shutil.rmtree(self.dir / name, ignore_errors=True)
        if "report" in later:
            for leftover in ("report.md", "reward_curves.png"):
                (self.dir / leftover).unlink(missing_ok=True)
        self._save()

    def _accept_change(self, new: dict[str, Any]) -> None:
        """A changed recipe may only touch values that no finished stage has read. A key the
        old recipe lacks (added to aha since) counts as changed only when not left at its default."""
        old = self.state.get("recipe")
        changed = _changed_keys(_with_defaults(old), new) if old else ["?"]
        done = [ALL_STAGES.index(s) for s in self.state["stages"] if s in ALL_STAGES]
        for key in changed:
            first = ALL_STAGES.index(FIRST_STAGE_READING.get(key, FIRST_STAGE_READING.get(key.split(".")[0],
                                                                                            ALL_STAGES[0])))
            if any(i >= first for i in done):
                raise RecipeError(f"{self.dir} holds a run of a different recipe ({key} changed after stages that "
                                  "read it ran); re-run the same command to resume, or pass --out NEW_DIR")
        self.changed = changed

    def _save(self) -> None:
        if not self.writes:
            return
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


def _setup_logging(run_dir: Path, main_process: bool = True) -> None:
    """The main process logs to the terminal and run.log; the others (of a launch) only their
    warnings, marked with their rank, to the terminal."""
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    if main_process:
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr), logging.FileHandler(run_dir / "run.log")]
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    else:
        handlers = [logging.StreamHandler(sys.stderr)]
        handlers[0].setLevel(logging.WARNING)
        fmt = logging.Formatter(f"%(asctime)s [rank {rank()}] %(levelname)s %(message)s", "%H:%M:%S")
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False


def run_recipe(recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None = None,
               stop_after: str | None = None, restart_from: str | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of ``recipe`` into ``out_dir``; returns the state.
    ``restart_from`` runs that stage and every later one again (their outputs are replaced)."""
    from .backends import make_backend
    from .models import pick_backend

    pick_backend(recipe.model.backend, recipe.model)  # "unsloth without a GPU" is refused before the run directory is touched
    stages = plan(recipe)
    if stop_after and stop_after not in stages:
        raise RecipeError(f"--stop-after {stop_after}: not a stage of this recipe ({', '.join(stages)})")
    if restart_from and restart_from not in stages:
        raise RecipeError(f"--from {restart_from}: not a stage of this recipe ({', '.join(stages)})")
    # The main process sets up (or resumes) the run folder; the others then read it.
    run = on_main(lambda: Run(recipe, out_dir, recipe_dir, restart_from=restart_from))
    if run is None:
        run = Run.follow(recipe, out_dir, recipe_dir)
    _setup_logging(run.dir, is_main())
    todo = [s for s in stages if not run.done(s)]
    if run.changed:
        log.info("recipe changed in %s; no finished stage read it, so the remaining stages use the new values",
                 ", ".join(run.changed))
    log.info("run %s in %s: stages %s%s", recipe.name, run.dir, " -> ".join(stages),
             f" (done already: {', '.join(s for s in stages if run.done(s))})" if len(todo) < len(stages) else "")
    if world_size() > 1:
        log.info("launch: %d processes; %s", world_size(), global_batch_line(recipe, world_size()))
    fmt = get_format(resolve_path(recipe.format, recipe_dir))
    backend = None
    if any(s not in ("compare", "report") for s in todo):  # the main process prepares the base model first
        backend = on_main(lambda: make_backend(recipe, run, fmt)) or make_backend(recipe, run, fmt)
    try:
        for stage in stages:
            if run.done(stage):
                continue
            log.info("stage %s", stage)
            started = time.time()
            try:
                if stage in EVERY_PROCESS:
                    result = STAGE_FUNCS[stage](run, backend, fmt)
                else:
                    result = on_main(lambda: STAGE_FUNCS[stage](run, backend, fmt))
            except BaseException:
                log.error("stage %s stopped after %.1f s; finished stages are kept", stage, time.time() - started)
                raise
            run.finish(stage, time.time() - started, result or {})
            log.info("stage %s done in %.1f s", stage, time.time() - started)
            if stage == stop_after:
                break
    finally:
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
    def do(run: Run, backend: TrainingBackend, fmt: Any) -> dict[str, Any]:
        from dataclasses import replace

        from aha.eval import Sampling, evaluate
        from aha.eval.backends import prompts_per_batch_for

        from .data import eval_problems
        from .preflight import grpo_sampling

        recipe = run.recipe
        sampling = Sampling(max_new_tokens=recipe.eval.max_new_tokens, seed=recipe.seed)
        adapter = _adapter_for(run, stage)
        generator = backend.generator(adapter)  # bound to the adapter; meta records which
        meta = {"model": recipe.model.name, "stage": stage, "adapter": adapter}
        results = {}
        for key, problems in eval_problems(recipe).items():
            summary = evaluate(generator, problems, run.path(stage, key), fmt, sampling,
                               meta={**meta, "task": key})
            r = summary["results"]
            log.info("%s %s: format %.1f%%, strict %.1f%%, lenient %.1f%%, truncated %.1f%% (%d problems)", stage, key,
                     100 * r["format_compliance"], 100 * r["accuracy_strict"], 100 * r["accuracy_lenient"],
                     100 * r["truncation_rate"], r["problems"])
            results[key] = {k: r[k] for k in ("problems", "format_compliance", "accuracy_strict", "accuracy_lenient",
                                              "accuracy_math_verify", "truncation_rate", "mean_completion_tokens")}
            if recipe.eval.sampled_k and recipe.grpo.enabled and stage != "eval-before":
                # GRPO sharpens the sampled policy first: k answers per problem at GRPO's own sampling settings.
                k = recipe.eval.sampled_k
                sampled = replace(grpo_sampling(recipe, recipe.eval.max_new_tokens), n=k, seed=recipe.seed)
                with prompts_per_batch_for(generator, k):
                    summary = evaluate(generator, problems[: recipe.eval.sampled_limit],
                                       run.path(stage, f"{key}-sampled"), fmt, sampled,
                                       meta={**meta, "task": key})
                r = summary["results"]
                log.info("%s %s sampled (k=%d, temperature %g): mean pass rate strict %.1f%% (%d problems)", stage,
                         key, k, sampled.temperature, 100 * r["pass@1_strict"], r["problems"])
                results[f"{key}-sampled"] = {"problems": r["problems"], "k": k, "temperature": sampled.temperature,
                                             "pass@1_strict": r["pass@1_strict"], "pass@1_lenient": r["pass@1_lenient"],
                                             f"pass@{k}_strict": r[f"pass@{k}_strict"]}
        return {"results": results}
    return do


def _sft(run: Run, backend: TrainingBackend, fmt: Any) -> dict[str, Any]:
    return backend.sft(run.path("sft"))


def _start_adapter(run: Run) -> str | None:
    """The policy GRPO starts from: the SFT adapter, or none (a fresh LoRA on the base model)."""
    return str(run.path("sft", "adapter")) if run.recipe.sft.enabled else None


def _preflight(run: Run, backend: TrainingBackend, fmt: Any) -> dict[str, Any]:
    from .preflight import PREFLIGHT_FILE, check_verdicts

    report = backend.preflight(run.path("preflight"), _start_adapter(run))
    check_verdicts(report, run.recipe.grpo.preflight, run.path("preflight", PREFLIGHT_FILE))
    s = report["stats"]
    k = s["group_size"]
    return {"prompts": s["prompts"], "pass@1": s["pass@1"], f"pass@{k}": s[f"pass@{k}"],
            "flat_group_share": s["flat_group_share"], "truncation_rate": s["truncation_rate"],
            "selection": report["selection"], "verdicts": [f"{v['level']}: {v['message']}" for v in report["verdicts"]]}


def _grpo(run: Run, backend: TrainingBackend, fmt: Any) -> dict[str, Any]:
    selected = run.path("preflight") if run.recipe.grpo.select == "learnable" else None
    return backend.grpo(run.path("grpo"), _start_adapter(run), selected_from=selected)


COMPARISONS = (("overall", "eval-before", "eval-after"), ("sft", "eval-before", "eval-after-sft"),
               ("grpo", "eval-after-sft", "eval-after"))


def _compare(run: Run, backend: TrainingBackend, fmt: Any) -> dict[str, Any]:
    from aha.eval import write_report
    from aha.eval.compare import compare_pass_rates

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
    sampled: dict[str, Any] = {}
    if run.path("eval-after-sft").is_dir():
        for folder in sorted(p for p in run.path("eval-after-sft").iterdir() if p.name.endswith("-sampled")):
            if run.path("eval-after", folder.name).is_dir():
                r = compare_pass_rates(folder, run.path("eval-after", folder.name), metric=run.recipe.eval.metric)
                sampled[f"{folder.name}/grpo"] = r
                log.info("compare %s grpo (sampled, k=%d): mean pass rate %.1f%% -> %.1f%%, %d problems up / %d down, "
                         "sign test p = %.3g", folder.name, r["k"], 100 * r["before"], 100 * r["after"], r["improved"],
                         r["worsened"], r["p_value"])
    return {"comparisons": out, "sampled": sampled}


def _export(run: Run, backend: TrainingBackend, fmt: Any) -> dict[str, Any]:
    return backend.export(final_adapter(run), run.path("export"))


def _report(run: Run, backend: TrainingBackend, fmt: Any) -> dict[str, Any]:
    from .report import write_run_report

    path = write_run_report(run.dir, run.recipe, run.state, versions())
    log.info("report: %s", path)
    return {"path": str(path)}


STAGE_FUNCS = {"eval-before": _eval("eval-before"), "sft": _sft, "eval-after-sft": _eval("eval-after-sft"),
               "preflight": _preflight, "grpo": _grpo, "eval-after": _eval("eval-after"), "compare": _compare, "export": _export,
               "report": _report}
