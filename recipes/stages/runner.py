"""``aha run``: the stages of a recipe (``table.STAGES``), in order, into one run directory.

Each finished stage is recorded in ``state.json`` (status, timing, the paths it wrote);
re-running the same command skips finished stages and resumes training from its last
checkpoint. A run directory belongs to one recipe: a change that would alter a stage
already run is refused rather than mixed; a change to values only later stages read (say
``grpo.*`` after a preflight that stopped the run) is taken, and logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aha.eval.files import LOCK_FILE, FolderLock, write_json
from aha.formats import Format, get_format

from ..config.machine import is_main, rank, world_size
from ..config.load import as_today
from ..config.schema import Recipe, RecipeError, resolve_path
from ..config.trl_args import global_batch_line
from ..launch.distributed import on_main
from .results import STATE_FILE, read_state
from .table import BY_NAME, GRPO, REPORT, STAGES, Stage, first_reader, plan

if TYPE_CHECKING:  # the backends import the training stack; the runner needs only their shape
    from ..training.backends import TrainingBackend

log = logging.getLogger("aha")


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


def reset_peak_memory() -> None:
    """Start measuring this process's peak resident memory afresh (Linux; elsewhere the peak
    stays the process's whole life)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_memory_gib() -> float:
    """This process's peak resident memory since :func:`reset_peak_memory` (GPU memory is the
    framework's to report)."""
    import resource

    try:
        with open("/proc/self/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 2**20, 2)


def release_free_memory() -> None:
    """Between stages: collect the last stage's models and hand freed heap back to the system
    (glibc keeps it otherwise, so each stage's peak would stack on the last one's)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Context:
    """What a stage function gets: its own record, the run, the backend (None for stages that
    need no model) and the recipe's format."""

    stage: Stage
    run: Run
    backend: TrainingBackend | None
    fmt: Format

    @property
    def recipe(self) -> Recipe:
        return self.run.recipe

    def path(self, *parts: str) -> Path:
        """A path in this stage's own folder."""
        return self.run.path(self.stage.name, *parts)


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


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder``, as paths relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()} if folder.is_dir() else set()


class Run:
    """One run directory: its recipe, its state, its log. ``state.json`` records, per stage, every
    file the stage wrote (``wrote``: what appeared while it ran, a stage killed mid-way included),
    so ``--from`` and a stage's own clean-up remove exactly those and nothing of the user's."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None = None,
                 restart_from: str | None = None):
        self.recipe, self.dir, self.recipe_dir = recipe, Path(out_dir), recipe_dir
        self.changed: list[str] = []  # recipe values changed since the stages already done (none of which read them)
        self.writes = True
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / STATE_FILE
        self.state = read_state(self.dir, required=False)
        digest = recipe_hash(recipe)
        self.state.setdefault("stages", {})
        self.state.setdefault("wrote", {})
        self._recover_running()
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
        run.state = read_state(run.dir)
        return run

    def check_same_recipe(self) -> None:
        """Raise (RecipeError) if this folder's finished stages read values the recipe now changes."""
        if self.state.get("recipe_hash") != recipe_hash(self.recipe):
            self._accept_change(self.recipe.to_dict())

    def _forget_from(self, stage: str) -> None:
        """Drop ``stage`` and every later one, with the files they wrote, so they run again (say GRPO
        with another seed, from the same warmup). Earlier stages and their outputs stay, and so does
        every file aha did not write."""
        names = [st.name for st in STAGES]
        later = names[names.index(stage):]
        for name in later:
            if name in self.state["stages"] and name not in self.state["wrote"]:
                # finished by an aha that did not record its files: its own folder was all it wrote
                log.info("removing %s (written before aha recorded each stage's files)", self.dir / name)
                shutil.rmtree(self.dir / name, ignore_errors=True)
                if name == REPORT.name:
                    for leftover in ("report.md", "reward_curves.png"):
                        (self.dir / leftover).unlink(missing_ok=True)
            self.state["stages"].pop(name, None)
            self.remove_written(name)
        self._save()

    def begin(self, stage: str) -> None:
        """Note the files present as ``stage`` starts: what appears until :meth:`end` is the stage's."""
        if self.writes:
            self.state["running"] = {"stage": stage, "before": sorted(files_under(self.dir))}
            self._save()

    def end(self, stage: str) -> None:
        """Record the files ``stage`` wrote (it finished or stopped)."""
        if self.writes and self.state.get("running", {}).get("stage") == stage:
            self._recover_running()
            self._save()

    def _recover_running(self) -> None:
        """The files that appeared while the last stage ran are that stage's, also when the process
        was killed before it could say so."""
        running = self.state.pop("running", None)
        if isinstance(running, dict) and isinstance(running.get("before"), list):
            new = files_under(self.dir) - set(running["before"])
            known = set(self.state["wrote"].get(running.get("stage"), []))
            self.state["wrote"][running["stage"]] = sorted(known | new)

    def remove_written(self, stage: str) -> None:
        """Delete every file ``stage`` wrote (and the folders that leaves empty); nothing else."""
        paths = self.state["wrote"].pop(stage, [])
        for rel in paths:
            target = self.dir / rel
            if target.is_file() or target.is_symlink():
                target.unlink()
        for rel in sorted({str(Path(r).parent) for r in paths}, key=lambda r: -r.count("/")):
            folder = self.dir / rel
            while folder != self.dir and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
        running = self.state.get("running")
        if isinstance(running, dict) and isinstance(running.get("before"), list):
            running["before"] = sorted(set(running["before"]) - set(paths))  # written again: the stage's again
        self._save()

    def _accept_change(self, new: dict[str, Any]) -> None:
        """A changed recipe may only touch values that no finished stage has read. A key the
        old recipe lacks (added to aha since) counts as changed only when not left at its default;
        one aha no longer has changes nothing."""
        old = self.state.get("recipe")
        changed = _changed_keys(as_today(old), new) if old else ["?"]
        order = {st.name: i for i, st in enumerate(STAGES)}
        done = [order[s] for s in self.state["stages"] if s in order]
        for key in changed:
            first = order[first_reader(key, self.recipe).name]
            if any(i >= first for i in done):
                raise RecipeError(f"{self.dir} holds a run of a different recipe ({key} changed after stages that "
                                  "read it ran); re-run the same command to resume, or pass --out NEW_DIR")
        self.changed = changed

    def _save(self) -> None:
        if not self.writes:
            return
        write_json(self.state_path, self.state)

    def done(self, stage: str) -> bool:
        return stage in self.state["stages"]

    def finish(self, stage: str, seconds: float, result: dict[str, Any]) -> None:
        self.state["stages"][stage] = {"seconds": round(seconds, 1), **result}
        self._save()

    def undo(self, stage: str) -> None:
        """Mark a finished stage as not done (its outputs stay), so the next run does it again."""
        if self.state["stages"].pop(stage, None) is not None:
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


def check_stage_names(recipe: Recipe, stop_after: str | None, restart_from: str | None) -> list[str]:
    """The recipe's stages, after checking that ``--stop-after`` and ``--from`` name one of them."""
    stages = plan(recipe)
    for flag, stage in (("--stop-after", stop_after), ("--from", restart_from)):
        if stage and stage not in stages:
            raise RecipeError(f"{flag} {stage}: not a stage of this recipe ({', '.join(stages)})")
    return stages


def run_recipe(recipe: Recipe, out_dir: str | Path, recipe_dir: Path | None = None,
               stop_after: str | None = None, restart_from: str | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of ``recipe`` into ``out_dir``; returns the state.
    ``restart_from`` runs that stage and every later one again (their outputs are replaced)."""
    from ..config.machine import pick_backend

    pick_backend(recipe.model.backend, recipe.model)  # "unsloth without a GPU" is refused before the run directory is touched
    stages = check_stage_names(recipe, stop_after, restart_from)
    if not (Path(out_dir) / STATE_FILE).is_file():
        on_main(lambda: refuse_foreign_folder(Path(out_dir)))  # before the lock file goes into it
    if GRPO.name in stages and GRPO.name not in read_state(Path(out_dir), required=False).get("stages", {}):
        from ..training.trainers import test_rewards

        # your reward functions (and a reward model) called once on sample rows, before anything is written or loads
        on_main(lambda: test_rewards(recipe, get_format(resolve_path(recipe.format, recipe_dir))))
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
            func, ctx = stage.run(), Context(stage, run, backend, fmt)
            reset_peak_memory()
            run.begin(name)
            try:
                result = func(ctx) if stage.every_process else on_main(lambda: func(ctx))
            except BaseException:
                log.error("stage %s stopped after %.1f s; finished stages are kept", name, time.time() - started)
                raise
            finally:
                run.end(name)
            if backend is not None and not any(BY_NAME[s].needs_model for s in todo[todo.index(name) + 1:]):
                backend.close()  # no later stage needs it: its engine's memory is free for verify-export's fresh process
                backend = None
            release_free_memory()
            peak = peak_memory_gib()
            run.finish(name, time.time() - started, {**(result or {}), "peak_memory_gib": peak})
            log.info("stage %s done in %.1f s (peak memory %.2f GiB)", name, time.time() - started, peak)
            if name == stop_after:
                break
    finally:
        if backend is not None:
            backend.close()
    return run.state
