"""The verify-export stage: what the run exported is loaded exactly as a user loads it (a
fresh process, ``aha eval`` on the folder on disk) and answers the first problems of the
first evaluation task, with the final evaluation's format, prompts and lengths. Each answer
is paired with the final evaluation's answer to the same problem; an export that does not
behave like the adapter that was evaluated ends the run in one line.

The adapter must give the same texts (same weights, same precision); merged weights are
rounded to 16 bits (and GGUF quantised), so a few texts may differ, but the verdicts must
agree on nearly all problems.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from aha.eval.files import write_json
from aha.eval.runner import SAMPLES_FILE, read_done

from ..config.schema import RecipeError, resolve_path
from ..training.data import eval_problems
from ..training.models import resolve_dtype
from .runner import Context
from .table import EVAL_AFTER, EXPORT

log = logging.getLogger("aha")
VERIFICATION_FILE = "verification.json"
# A launch's processes leave these in the environment; the fresh process is a user's, not a rank of the launch.
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                     "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def _eval_command(ctx: Context, model: str, out: Path, limit: int, adapter: str | None = None,
                  gguf_file: str | None = None) -> list[str]:
    recipe, task = ctx.recipe, ctx.recipe.eval.tasks[0]
    command = ["eval", "--model", model, "--task", task.task,
               "--format", resolve_path(recipe.format, ctx.run.recipe_dir), "--limit", str(limit), "--seed",
               str(task.seed), "--level", str(task.level), "--heldout", str(task.heldout), "--max-new-tokens",
               str(recipe.eval.max_new_tokens), "--batch-size", str(recipe.eval.batch_size), "--dtype",
               resolve_dtype(recipe.model.dtype), "--backend", "hf", "--out", str(out)]
    if task.path:
        command += ["--data", resolve_path(task.path, ctx.run.recipe_dir)]
    if adapter:
        command += ["--adapter", adapter]
    if gguf_file:
        command += ["--gguf-file", gguf_file]
    return command


_STARTED = "verify-export: evaluating "


def _fresh_evals(commands: dict[str, list[str]]) -> None:
    """Every export's ``aha eval`` command line, run by one fresh process (importing the stack
    is most of a short evaluation's time); each command loads its model from disk, as it does
    when a user types it."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES and not k.startswith("ACCELERATE_")}
    program = "import sys; from aha.recipes.stages.verify import run_commands; sys.exit(run_commands(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", program, json.dumps(commands)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        started = [line[len(_STARTED):] for line in lines if line.startswith(_STARTED)]
        what = started[-1] if started else "the export"
        raise RecipeError(f"verify-export: {what} could not be loaded and evaluated as a user would: "
                          f"{(lines or ['(no message)'])[-1]}")


def run_commands(commands_json: str) -> int:
    """In the fresh process: each command through ``aha``'s own entry point, in order; the
    first that fails ends it (its message last on stderr, after the name of what it evaluated)."""
    from ..cli import main

    for what, argv in json.loads(commands_json).items():
        print(_STARTED + what, file=sys.stderr, flush=True)
        code = main(argv)
        if code:
            return code
    return 0


def compare_answers(reference: dict[str, dict], exported: dict[str, dict], ids: list[str]) -> dict[str, Any]:
    """Answers of the exported model next to the final evaluation's, problem by problem.

    >>> row = lambda text, ok: {"samples": [{"text": text, "strict": ok}]}
    >>> compare_answers({"a": row("4", True), "b": row("5", False)}, {"a": row("4", True), "b": row("6", False)},
    ...                 ["a", "b"])
    {'problems': 2, 'identical_texts': 1, 'same_verdicts': 2, 'strict_adapter': 0.5, 'strict_export': 0.5}
    """
    pairs = [(reference[i]["samples"][0], exported[i]["samples"][0]) for i in ids]
    return {"problems": len(pairs), "identical_texts": sum(a["text"] == b["text"] for a, b in pairs),
            "same_verdicts": sum(a["strict"] == b["strict"] for a, b in pairs),
            "strict_adapter": sum(a["strict"] for a, _ in pairs) / len(pairs),
            "strict_export": sum(b["strict"] for _, b in pairs) / len(pairs)}


def verify_export_stage(ctx: Context) -> dict[str, Any]:
    recipe, run = ctx.recipe, ctx.run
    exports = run.state["stages"][EXPORT.name]
    key, problems = next(iter(eval_problems(recipe).items()))
    limit = min(recipe.export.verify_problems, len(problems))
    ids = [p.id for p in problems[:limit]]
    reference = read_done(run.path(EVAL_AFTER.name, key, SAMPLES_FILE))
    base = str(run.path("base")) if run.path("base", "config.json").is_file() else recipe.model.name
    x = recipe.export
    same = {"identical_texts": x.verify_min_identical}
    rounded = {"identical_texts": x.verify_min_identical_rounded, "same_verdicts": x.verify_min_same_verdicts}
    artifacts = [("adapter", base, exports["adapter"], None, same)]
    if exports.get("merged"):
        artifacts.append(("merged", exports["merged"], None, None, rounded))
    for gguf in sorted(Path(exports["gguf"]).glob("*.gguf")) if exports.get("gguf") else []:
        artifacts.append((f"gguf/{gguf.name}", str(gguf.parent), None, gguf.name, rounded))
    shutil.rmtree(ctx.path(), ignore_errors=True)  # answers of an earlier export must never be taken for this one's
    report: dict[str, Any] = {"task": key, "dtype": resolve_dtype(recipe.model.dtype), "artifacts": {}}
    failures = []
    outs = {name: ctx.path(name.replace("/", "-")) for name, *_ in artifacts}
    _fresh_evals({f"export/{name}": _eval_command(ctx, model, outs[name], limit, adapter, gguf_file)
                  for name, model, adapter, gguf_file, _ in artifacts})
    for name, _, _, _, needed in artifacts:
        result = compare_answers(reference, read_done(outs[name] / SAMPLES_FILE), ids)
        short = [m for m, share in needed.items() if result[m] < share * result["problems"]]
        result.update(needed=needed, passed=not short)
        report["artifacts"][name] = result
        log.info("verify-export %s: %d of %d answers the same text, %d the same verdict; strict %.1f%% (export) vs "
                 "%.1f%% (evaluated adapter)", name, result["identical_texts"], result["problems"],
                 result["same_verdicts"], 100 * result["strict_export"], 100 * result["strict_adapter"])
        if short:
            failures.append(f"export/{name} does not behave like the adapter that was evaluated: "
                            + ", ".join(f"{m.replace('_', ' ')} on {result[m]} of {result['problems']} problems (needs "
                                        f"{needed[m]:.0%})" for m in short))
    report["passed"] = not failures
    write_json(run.path(EXPORT.name, VERIFICATION_FILE), report)
    if failures:
        run.undo(EXPORT.name)  # the export is not trusted: the next run exports again
        raise RecipeError(f"verify-export: {failures[0]}; everything is kept, {run.path(EXPORT.name, VERIFICATION_FILE)} "
                          "has the details, and re-running exports again")
    return {"verification": str(run.path(EXPORT.name, VERIFICATION_FILE))}
