"""The verify-export stage: what the run exported is loaded exactly as a user loads it (a
fresh process, ``aha eval`` on the folder on disk) and answers the first problems of the
first evaluation task, with the final evaluation's format, prompts and lengths. Each answer
is paired with the final evaluation's answer to the same problem; an export that does not
behave like the adapter that was evaluated ends the run in one line.

How close each export must come depends on the arithmetic it does against the evaluated
model's (``precision_class``): the adapter, and merged weights saved at the float32 the run
evaluated at, must give the same texts; merged weights saved at 16 bits round the merged sum
once, which the evaluated adapter never does, so a few texts may part; GGUF is quantised. Every
text that differs is listed with where it parts from the evaluated answer and why it may.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aha.eval.files import read_json, write_json
from aha.eval.runner import SAMPLES_FILE, read_done
from aha.eval.tasks import longest_first

from ..config.machine import resolve_dtype
from ..config.schema import ExportConfig, RecipeError, resolve_path
from ..training.data import eval_problems
from .evaluate import EVAL_AFTER
from .export import EXPORT
from .kernel import Context, Stage
from .memory import gpu_free_before_fresh_process
from .results import RunResults, read_json_if_there
from .training import trains

log = logging.getLogger("aha")
VERIFICATION_FILE = "verification.json"
VERIFY_ENGINE = "hf"  # what the fresh process evaluates with: a user's `aha eval` on the folder on disk
# A launch's processes leave these in the environment; the fresh process is a user's, not a rank of the launch.
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                     "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def _eval_command(ctx: Context, model: str, out: Path, limit: int, adapter: str | None = None,
                  gguf_file: str | None = None) -> list[str]:
    recipe, task = ctx.recipe, ctx.recipe.eval.tasks[0]
    command = ["eval", "--model", model, "--task", task_argument(ctx, task.task),
               "--format", resolve_path(recipe.format, ctx.run.recipe_dir), "--limit", str(limit), "--seed",
               str(task.seed), "--level", str(task.level), "--max-new-tokens",
               str(recipe.eval.max_new_tokens), "--batch-size", str(recipe.eval.batch_size), "--dtype",
               resolve_dtype(recipe.model.dtype), "--backend", VERIFY_ENGINE, "--out", str(out),
               "--user-code-timeout", str(recipe.user_code_timeout)]
    if task.path:
        command += ["--data", resolve_path(task.path, ctx.run.recipe_dir)]
    if task.longest:
        command += ["--longest"]
    if adapter:
        command += ["--adapter", adapter]
    if gguf_file:
        command += ["--gguf-file", gguf_file]
    return command


_STARTED = "verify-export: evaluating "


def task_argument(ctx: Context, name: str) -> str:
    """``aha eval --task``'s value for the recipe's first evaluation task: a shipped task's name, or, for
    your own task (it lives in the recipe), a task file written beside the verification, as a user who
    evaluates it by hand would pass one (its paths were made absolute when the recipe was checked)."""
    if name not in ctx.recipe.tasks:
        return name
    import yaml

    spec = ctx.path("task", f"{name}.yaml")
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(yaml.safe_dump(dict(ctx.recipe.tasks[name]), sort_keys=False), encoding="utf-8")
    return str(spec)


def _fresh_evals(commands: dict[str, list[str]]) -> None:
    """Every export's ``aha eval`` command line, run by one fresh process (importing the stack
    is most of a short evaluation's time); each command loads its model from disk, as it does
    when a user types it."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES and not k.startswith("ACCELERATE_")}
    program = ("import sys; from aha.recipes.cli import main; from aha.recipes.stages.verify import run_commands; "
               "sys.exit(run_commands(sys.argv[1], main))")
    done = subprocess.run([sys.executable, "-c", program, json.dumps(commands)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        started = [line[len(_STARTED):] for line in lines if line.startswith(_STARTED)]
        what = started[-1] if started else "the export"
        raise RecipeError(f"verify-export: {what} could not be loaded and evaluated as a user would: "
                          f"{(lines or ['(no message)'])[-1]}")


def run_commands(commands_json: str, main: Callable[[list[str]], int]) -> int:
    """In the fresh process: each command through ``aha``'s own entry point (``main``, which the
    process hands in), in order; the first that fails ends it (its message last on stderr, after
    the name of what it evaluated)."""
    for what, argv in json.loads(commands_json).items():
        print(_STARTED + what, file=sys.stderr, flush=True)
        code = main(argv)
        if code:
            return code
    return 0


def precision_class(kind: str, saved: str | None, evaluated: str) -> tuple[str, str]:
    """(class, why its texts may part from the evaluated adapter's) for an export of ``kind``
    whose weights were saved at ``saved`` (None: not said), the run having evaluated at
    ``evaluated``. The class picks the thresholds: ``same`` (the evaluated arithmetic: texts must
    match), ``rounded`` (16-bit merged weights of a 16-bit run: verdicts must match) or
    ``quantised`` (GGUF). Weights saved below the precision that was measured are held to
    ``same``: they are not the model the report measured.

    >>> precision_class("merged", "float32", "float32")[0], precision_class("merged", "bfloat16", "bfloat16")[0]
    ('same', 'rounded')
    >>> precision_class("merged", "bfloat16", "float32")
    ('same', 'saved at bfloat16 while the run evaluated at float32: every weight rounded below the precision that was measured')
    """
    if kind == "adapter":
        return "same", "the evaluated weights at the evaluated precision; only other batches (padding) can flip a near-tie"
    if kind == "gguf":
        return "quantised", "GGUF weights are quantised"
    if saved and _BITS.get(saved, 32) < _BITS.get(evaluated, 32):
        return "same", (f"saved at {saved} while the run evaluated at {evaluated}: every weight rounded below the "
                        "precision that was measured")
    if (saved or evaluated) == "float32":
        return "same", "merged at float32: (W + s*BA)x and Wx + s*B(Ax) agree to about 1e-6; only a near-tie can flip"
    return "rounded", (f"merged at {saved or evaluated}: the merged sum W + s*BA is rounded to 16 bits once, where the "
                       "evaluated adapter computes Wx + s*B(Ax); over long answers a flipped near-tie changes the rest")


_BITS = {"float32": 32, "bfloat16": 16, "float16": 16}


def saved_dtype(folder: str | Path) -> str | None:
    """The dtype a model folder's weights were saved at, from its config.json (None: not said)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    data = read_json(config, hint="a model folder's config.json is what save_pretrained wrote")
    value = data.get("dtype") or data.get("torch_dtype")
    return value if isinstance(value, str) else None


def compare_answers(reference: dict[str, dict], exported: dict[str, dict], ids: list[str]) -> dict[str, Any]:
    """Answers of the exported model next to the final evaluation's, problem by problem; each
    text that differs is listed with the characters both share before they part.

    >>> row = lambda text, ok: {"samples": [{"text": text, "strict": ok}]}
    >>> r = compare_answers({"a": row("4", True), "b": row("so 5", False)}, {"a": row("4", True), "b": row("so 6", False)},
    ...                     ["a", "b"])
    >>> {k: v for k, v in r.items() if k != "differences"}
    {'problems': 2, 'identical_texts': 1, 'same_verdicts': 2, 'strict_adapter': 0.5, 'strict_export': 0.5}
    >>> r["differences"]
    [{'id': 'b', 'shared_chars': 3, 'same_verdict': True, 'adapter': '5', 'export': '6'}]
    """
    pairs = [(i, reference[i]["samples"][0], exported[i]["samples"][0]) for i in ids]
    differences = []
    for i, a, b in pairs:
        if a["text"] != b["text"]:
            shared = len(os.path.commonprefix([a["text"], b["text"]]))
            differences.append({"id": i, "shared_chars": shared, "same_verdict": a["strict"] == b["strict"],
                                "adapter": a["text"][shared:shared + 80], "export": b["text"][shared:shared + 80]})
    return {"problems": len(pairs), "identical_texts": len(pairs) - len(differences),
            "same_verdicts": sum(a["strict"] == b["strict"] for _, a, b in pairs),
            "strict_adapter": sum(a["strict"] for _, a, _ in pairs) / len(pairs),
            "strict_export": sum(b["strict"] for _, _, b in pairs) / len(pairs), "differences": differences}


def thresholds(x: ExportConfig) -> dict[str, dict[str, float]]:
    """Each precision class's shares (of the verified problems) that must match, from the recipe;
    ``engines``: the same weights on two engines, judged on verdicts alone."""
    return {"same": {"identical_texts": x.verify_min_identical},
            "rounded": {"identical_texts": x.verify_min_identical_rounded, "same_verdicts": x.verify_min_same_verdicts},
            "quantised": {"identical_texts": x.verify_min_identical_quantised,
                          "same_verdicts": x.verify_min_same_verdicts_quantised},
            "engines": {"same_verdicts": x.verify_min_same_verdicts_engines}}



def engine_of(results: Path) -> str:
    """The engine an evaluation's answers came from (its fingerprint's ``backend``)."""
    from aha.eval.runner import FINGERPRINT_FILE

    path = results / FINGERPRINT_FILE
    return str(read_json(path).get("backend", VERIFY_ENGINE)) if path.is_file() else VERIFY_ENGINE


def judge(name: str, result: dict[str, Any], kind: str, reason: str, needed: dict[str, float]) -> str | None:
    """Record the verdict on one export in ``result``; the failure line, or None when it passed.

    >>> r = {"problems": 50, "identical_texts": 38, "same_verdicts": 48}
    >>> judge("merged", dict(r), *precision_class("merged", "bfloat16", "float32"), {"identical_texts": 0.96})[:94]
    'export/merged does not behave like the adapter that was evaluated: identical texts on 38 of 50'
    >>> judge("merged", dict(r), "rounded", "16-bit", {"identical_texts": 0.5, "same_verdicts": 0.96}) is None
    True
    """
    short = [m for m, share in needed.items() if result[m] < share * result["problems"]]
    result.update(precision=kind, reason=reason, needed=needed, passed=not short)
    if not short:
        return None
    return (f"export/{name} does not behave like the adapter that was evaluated: "
            + ", ".join(f"{m.replace('_', ' ')} on {result[m]} of {result['problems']} problems (needs {needed[m]:.0%})"
                        for m in short) + f"; {reason}")


def verify_export_stage(ctx: Context) -> dict[str, Any]:
    recipe, run = ctx.recipe, ctx.run
    exports = run.state["stages"][EXPORT.name]
    key, problems = next(iter(eval_problems(recipe).items()))
    limit = min(recipe.export.verify_problems, len(problems))
    ids = [p.id for p in (longest_first(problems, limit) if recipe.eval.tasks[0].longest else problems[:limit])]
    reference = read_done(run.path(EVAL_AFTER.name, key, SAMPLES_FILE))
    engine = engine_of(run.path(EVAL_AFTER.name, key))
    base = str(run.path("base")) if run.path("base", "config.json").is_file() else recipe.model.name
    evaluated, needs = resolve_dtype(recipe.model.dtype), thresholds(recipe.export)
    adapter_class = precision_class("adapter", None, evaluated) if engine == VERIFY_ENGINE else (
        "engines", f"the run evaluated on {engine}, this check on aha's HF generation: two engines' greedy texts part "
        "at near-ties, so only verdicts are judged, and the exports are held to this HF re-run of the adapter")
    artifacts = [("adapter", base, exports["adapter"], None, adapter_class)]
    if exports.get("merged"):
        saved = saved_dtype(exports["merged"])
        artifacts.append(("merged", exports["merged"], None, None, precision_class("merged", saved, evaluated)))
    for gguf in sorted(Path(exports["gguf"]).glob("*.gguf")) if exports.get("gguf") else []:
        artifacts.append((f"gguf/{gguf.name}", str(gguf.parent), None, gguf.name, precision_class("gguf", None, evaluated)))
    run.remove_written(ctx.stage.name)  # answers of an earlier export must never be taken for this one's
    report: dict[str, Any] = {"task": key, "dtype": evaluated, "engine": engine, "verify_engine": VERIFY_ENGINE,
                              "artifacts": {}}
    failures = []
    outs = {name: ctx.path(name.replace("/", "-")) for name, *_ in artifacts}
    report.update(gpu_free_before_fresh_process())  # the training engine released (the runner closed it)?
    _fresh_evals({f"export/{name}": _eval_command(ctx, model, outs[name], limit, adapter, gguf_file)
                  for name, model, adapter, gguf_file, _ in artifacts})
    # One engine per comparison: the exports against the adapter's answers from the same engine and precision.
    same_engine = reference if engine == VERIFY_ENGINE else read_done(outs["adapter"] / SAMPLES_FILE)
    for name, _, _, _, (kind, reason) in artifacts:
        result = compare_answers(reference if name == "adapter" else same_engine, read_done(outs[name] / SAMPLES_FILE),
                                 ids)
        failure = judge(name, result, kind, reason, needs[kind])
        report["artifacts"][name] = result
        log.info("verify-export %s: %d of %d answers the same text, %d the same verdict; strict %.1f%% (export) vs "
                 "%.1f%% (evaluated adapter)", name, result["identical_texts"], result["problems"],
                 result["same_verdicts"], 100 * result["strict_export"], 100 * result["strict_adapter"])
        if failure:
            failures.append(failure)
    report["passed"] = not failures
    write_json(run.path(EXPORT.name, VERIFICATION_FILE), report)
    if failures:
        run.undo(EXPORT.name)  # the export is not trusted: the next run exports again
        raise RecipeError(f"verify-export: {failures[0]}; everything is kept, {run.path(EXPORT.name, VERIFICATION_FILE)} "
                          "has the details, and re-running exports again")
    return {"verification": str(run.path(EXPORT.name, VERIFICATION_FILE))}


def _read_verification(run_dir: Path, record: dict[str, Any] | None, out: RunResults) -> None:
    # also when the stage failed: its report says why, and the run report shows it
    out.verification = read_json_if_there(run_dir / EXPORT.name / VERIFICATION_FILE)


VERIFY_EXPORT = Stage("verify-export", "load what was exported as a user would (a fresh process) and check it answers "
                      "as the evaluated adapter did", verify_export_stage,
                      writes=("verify-export/**", f"{EXPORT.name}/{VERIFICATION_FILE}"),
                      enabled=lambda r: trains(r) and r.eval.enabled and r.export.verify, needs_model=False,
                      results=_read_verification)
