"""``aha run``: the stages of a recipe (``table.STAGES``), in order, into one run directory.

Each finished stage is recorded in ``state.json`` (status, timing, the paths it wrote;
``kernel.Run``); re-running the same command skips finished stages and resumes training from
its last checkpoint.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from aha.eval.files import LOCK_FILE, FolderLock
from aha.formats import get_format
from aha.rewards import set_user_code_timeout

from ..config.machine import is_main, rank, world_size
from ..config.schema import Recipe, RecipeError, resolve_path
from ..config.trl_args import global_batch_line
from ..launch.distributed import on_main
from . import kernel
from .kernel import Context
from .memory import gpu_peaks, memory_line, peak_memory_gib, release_free_memory, reset_gpu_peaks, reset_peak_memory
from .results import LOG_FILE, STATE_FILE, read_state
from .table import BY_NAME, GRPO, RFT, STAGES, plan

log = logging.getLogger("aha")


# What a fresh run folder may hold before the run writes anything: the run's lock, and Unsloth's compiled cache
# (imported into the run folder before the run starts).
FRESH_FOLDER = (LOCK_FILE, "unsloth_compiled_cache")


def refuse_foreign_folder(folder: Path) -> None:
    """A fresh run (no state.json) goes into a new or empty folder: one that holds anything else is
    the user's, and ``--from``, resume and every stage would write over it."""
    entries = sorted(e.name for e in folder.iterdir() if e.name not in FRESH_FOLDER) if folder.is_dir() else []
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RecipeError(f"{folder} holds files that are not an aha run's ({shown}) and no state.json; a run goes "
                          "into a new or empty folder: choose another --out")


class Run(kernel.Run):
    """A run folder of this stage table."""

    stages = STAGES


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when each message is logged: a notebook cell or a test
    may replace it after the run set up its logging, and the old one may be closed by then."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(run_dir: Path, main_process: bool = True) -> None:
    """The main process logs to the terminal and run.log; the others (of a launch) only their
    warnings, marked with their rank, to the terminal."""
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    if main_process:
        handlers: list[logging.Handler] = [_Stderr(), logging.FileHandler(run_dir / LOG_FILE)]
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    else:
        handlers = [_Stderr()]
        handlers[0].setLevel(logging.WARNING)
        fmt = logging.Formatter(f"%(asctime)s [rank {rank()}] %(levelname)s %(message)s", "%H:%M:%S")
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False


def check_stage_names(recipe: Recipe, stop_after: str | None, restart_from: str | None) -> list[str]:
    """The recipe's stages, after checking that ``--stop-after`` and ``--from`` name one of them.

    >>> from aha.recipes.config import recipe_from_dict
    >>> recipe = recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, "grpo": {"enabled": False}})
    >>> check_stage_names(recipe, "sft", None)[:2]
    ['eval-before', 'sft']
    >>> check_stage_names(recipe, None, "grpo")
    Traceback (most recent call last):
    ...
    aha.recipes.config.schema.RecipeError: --from grpo: not a stage of this recipe (eval-before, sft, eval-after, compare, export, verify-export, publish, report)
    """
    stages = plan(recipe)
    for flag, stage in (("--stop-after", stop_after), ("--from", restart_from)):
        if stage and stage not in stages:
            raise RecipeError(f"{flag} {stage}: not a stage of this recipe ({', '.join(stages)})")
    return stages


def test_graders(recipe: Recipe) -> None:
    from aha.eval.grading import test_grader

    from ..training.data import eval_problems

    for i, problems in enumerate(eval_problems(recipe).values()):
        test_grader(problems, f"eval.tasks[{i}] {recipe.eval.tasks[i].task}")


def check_engine_lengths(recipe: Recipe, fmt: Any) -> None:
    """A run whose engine has a length limit (Unsloth's or the hf backend's vLLM engine) meets every
    prompt against it with the real tokenizer before anything loads (``training.lengths``)."""
    from ..training.lengths import evaluation_engine, refuse_misfits
    from ..training.models import tokenizer_only

    if evaluation_engine(recipe).limit is not None:
        refuse_misfits(recipe, fmt, tokenizer_only(recipe.model))


def run_recipe(recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None = None,
               stop_after: str | None = None, restart_from: str | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of ``recipe`` into ``out_dir``; returns the state.
    ``restart_from`` runs that stage and every later one again (their outputs are replaced)."""
    from ..config.machine import pick_backend

    pick_backend(recipe.model.backend, recipe.model)  # "unsloth without a GPU" is refused before the run directory is touched
    stages = check_stage_names(recipe, stop_after, restart_from)
    if not (Path(out_dir) / STATE_FILE).is_file():
        on_main(lambda: refuse_foreign_folder(Path(out_dir)))  # before the lock file goes into it
    fmt = get_format(resolve_path(recipe.format, recipe_dir))
    set_user_code_timeout(recipe.user_code_timeout)
    finished = read_state(Path(out_dir), required=False).get("stages", {})
    trained_on_rewards = next((s for s in (GRPO.name, RFT.name) if s in stages), None)
    if trained_on_rewards and trained_on_rewards not in finished:
        from ..training.trainers import test_rewards

        # your reward functions (and a reward model) called once on sample rows, before anything is written or loads
        on_main(lambda: test_rewards(recipe, fmt))
    if any(BY_NAME[s].evaluates for s in stages if s not in finished):
        on_main(lambda: test_graders(recipe))  # your graders, on their own gold, before anything loads
    if any(BY_NAME[s].needs_model for s in stages if s not in finished):
        on_main(lambda: check_engine_lengths(recipe, fmt))
    # One writer per run folder: the main process holds its lock for the whole run (refused at once if another holds it).
    lock = on_main(lambda: FolderLock(out_dir).acquire())
    try:
        return _run_stages(recipe, out_dir, recipe_dir, stages, stop_after, restart_from, lock)
    finally:
        if lock is not None:
            lock.release()


def _run_stages(recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None, stages: list[str],
                stop_after: str | None, restart_from: str | None, lock: FolderLock | None) -> dict[str, Any]:
    from ..training.backends import make_backend

    # The main process sets up (or resumes) the run folder; the others then read it.
    run = on_main(lambda: Run(recipe, out_dir, recipe_dir, restart_from=restart_from))
    if run is None:
        run = Run.follow(recipe, out_dir, recipe_dir)
    _setup_logging(run.dir, is_main())
    if lock is not None and lock.taken_over:
        log.info("took over the run folder's lock from pid %d, which is no longer running", lock.taken_over)
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
    if any(BY_NAME[s].needs_model for s in todo):  # the main process prepares the base model first
        backend = on_main(lambda: make_backend(recipe, run.dir)) or make_backend(recipe, run.dir)
    try:
        for name in stages:
            if run.done(name):
                continue
            stage = BY_NAME[name]
            log.info("stage %s", name)
            started = time.time()
            func, ctx = stage.run, Context(stage, run, backend, fmt, STAGES)
            reset_peak_memory()
            reset_gpu_peaks()
            run.begin(name)
            try:
                result = func(ctx) if stage.every_process else on_main(lambda: func(ctx))
            except BaseException:
                log.error("stage %s stopped after %.1f s; finished stages are kept", name, time.time() - started)
                raise
            finally:
                run.end(name)
            peaks = gpu_peaks()  # before any release: what the stage itself held at most
            if backend is not None and not any(BY_NAME[s].needs_model for s in todo[todo.index(name) + 1:]):
                closing, backend = backend, None
                try:
                    closing.close()  # no later stage needs it: its memory is free for verify-export's fresh process
                except Exception as err:  # noqa: BLE001 - the stage's work is done and kept; the release is best effort
                    log.warning("the training backend did not close cleanly (%s: %s); its memory is released when "
                                "this process ends", type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
            release_free_memory()
            peaks = {"peak_memory_gib": peak_memory_gib(), **peaks}
            run.finish(name, time.time() - started, {**(result or {}), **peaks})
            log.info("stage %s done in %.1f s (%s)", name, time.time() - started, memory_line(peaks))
            if name == stop_after:
                break
    finally:
        if backend is not None:
            backend.close()
    return run.state
