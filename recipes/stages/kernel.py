"""The stage kernel: what a stage is (:class:`Stage`), what its function gets (:class:`Context`),
the run folder and its state (:class:`Run`: resume, the resume check, the files each stage
wrote) and the results reader. It imports no stage. Each stage module declares its own
record, beside its function: the recipe values it is the first to read, the files it writes
and how its results are read back; ``table.py`` lists the records in order and the runner
(``runner.py``) runs them.

A run directory belongs to one recipe: a change that would alter a stage already run is
refused rather than mixed; a change to values only later stages read (say ``grpo.*`` after a
preflight that stopped the run) is taken, and logged."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aha.eval.files import LOCK_FILE, write_json
from aha.formats import Format

from ..config.load import as_today
from ..config.schema import Recipe, RecipeError
from .results import LOG_FILE, RECIPE_FILE, STATE_FILE, RunResults, read_state

if TYPE_CHECKING:  # the backends import the training stack; a stage needs only their shape
    from ..training.backends import TrainingBackend

log = logging.getLogger("aha")
# What the runner itself writes (every other file in a run folder is a stage's): the state, the recipe as run, the log,
# the lock, the base model it prepares for the stages, and Unsloth's compiled cache.
RUN_FILES = (STATE_FILE, RECIPE_FILE, LOG_FILE, LOCK_FILE, "base/**", "unsloth_compiled_cache/**")

StageFn = Callable[["Context"], "dict[str, Any]"]  # returns what state.json records for the stage
# Adds what a stage wrote to the run's results: (run folder, the stage's record in state.json or None when it has
# not finished, the results being read).
ResultsReader = Callable[[Path, "dict[str, Any] | None", RunResults], None]


def _always(recipe: Recipe) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One stage of a run, declared in its own module."""

    name: str  # also the stage's folder in the run directory
    doc: str  # what it does, in one line (the notebook and `--dry-run` show it)
    run: StageFn  # the stage function (its module imports the training stack only inside it)
    # every file it writes: patterns relative to the run folder (``*`` within a name, a trailing ``/**`` any depth)
    writes: tuple[str, ...]
    enabled: Callable[[Recipe], bool] = _always  # does this recipe run it?
    # recipe sections or keys that this stage is the first to read (or a function of the recipe that says which)
    reads: tuple[str, ...] | Callable[[Recipe], tuple[str, ...]] = ()
    # keys of a section in ``reads`` that this stage never reads: changing one after it ran leaves its results true
    # (``grpo.trainer`` for the preflight, which samples the same for either trainer, so both can start from one run)
    reads_except: tuple[str, ...] = ()
    every_process: bool = False  # under a launch: True runs on every process (training), else on the main one
    needs_model: bool = True  # False: reads only what earlier stages wrote (no backend is made for it)
    evaluates: Callable[[Path, Recipe], str | None] | None = None  # an evaluation: the adapter it evaluates
    results: ResultsReader | None = None  # how its results are read back (the report, the card, the Python API)

    def reads_for(self, recipe: Recipe) -> tuple[str, ...]:
        return self.reads(recipe) if callable(self.reads) else self.reads

    def wrote(self, relative: str) -> bool:
        """Is ``relative`` (a path in the run folder) one of the files this stage declares?

        >>> Stage("x", "", lambda ctx: {}, writes=("x/**", "report.md")).wrote("x/a/b.json")
        True
        """
        return any(_matches(relative, pattern) for pattern in self.writes)


def _matches(relative: str, pattern: str) -> bool:
    if pattern.endswith("/**"):
        return relative.startswith(pattern[:-2])
    return fnmatch(relative, pattern) and relative.count("/") == pattern.count("/")


def adapter_of(run_dir: Path, stage: Stage) -> Path:
    """Where a training stage saves its LoRA adapter."""
    return run_dir / stage.name / "adapter"


def plan(stages: tuple[Stage, ...], recipe: Recipe) -> list[str]:
    """The names of ``stages`` this recipe runs, in order."""
    return [s.name for s in stages if s.enabled(recipe)]


def first_reader(stages: tuple[Stage, ...], key: str, recipe: Recipe) -> Stage:
    """The first of ``stages`` that reads recipe value ``key`` (``section.key``) in ``recipe``; a
    value no stage names is read by the first stage.

    >>> stages = (Stage("a", "", dict, writes=()), Stage("b", "", dict, writes=(), reads=("s",),
    ...           reads_except=("s.x",)), Stage("c", "", dict, writes=(), reads=("s",)))
    >>> [first_reader(stages, key, None).name for key in ("s.y", "s.x", "t")]
    ['b', 'c', 'a']
    """
    section = key.split(".")[0]
    for stage in stages:
        reads = stage.reads_for(recipe)
        if key in reads or (section in reads and key not in stage.reads_except):
            return stage
    return stages[0]


def read_results(run_dir: str | Path, stages: tuple[Stage, ...], state: dict[str, Any] | None = None) -> RunResults:
    """Every stage's results, read back by the stage itself (``aha.recipes.stages.table.read_run``
    reads a run folder with the whole table)."""
    run_dir = Path(run_dir)
    if state is None:
        state = read_state(run_dir, required=False)
    done = state.get("stages", {})
    out = RunResults(run_dir=run_dir, stages=done, recipe=state.get("recipe", {}))
    for stage in stages:
        if stage.results is not None:
            stage.results(run_dir, done.get(stage.name), out)
    return out


@dataclass(frozen=True)
class Context:
    """What a stage function gets: its own record, the run, the backend (None for stages that
    need no model), the recipe's format and the stage table (for stages that read the others')."""

    stage: Stage
    run: Run
    backend: TrainingBackend | None
    fmt: Format
    stages: tuple[Stage, ...]

    @property
    def recipe(self) -> Recipe:
        return self.run.recipe

    def path(self, *parts: str) -> Path:
        """A path in this stage's own folder."""
        return self.run.path(self.stage.name, *parts)

    def results(self) -> RunResults:
        """What the run's stages have written so far, read back."""
        return read_results(self.run.dir, self.stages, self.run.state)


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


def recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder``, as paths relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()} if folder.is_dir() else set()


class Run:
    """One run directory of the stage table ``stages`` (``runner.Run`` is this with the table):
    its recipe, its state, its log. ``state.json`` records, per stage, every file the stage wrote
    (``wrote``: what appeared while it ran, a stage killed mid-way included), so ``--from`` and a
    stage's own clean-up remove exactly those and nothing of the user's."""

    stages: tuple[Stage, ...] = ()

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
        (self.dir / RECIPE_FILE).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
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
        names = [st.name for st in self.stages]
        later = names[names.index(stage):]
        for name in later:
            if name in self.state["stages"] and name not in self.state["wrote"]:
                # finished by an aha that did not record its files: its own folder was all it wrote
                log.info("removing %s (written before aha recorded each stage's files)", self.dir / name)
                shutil.rmtree(self.dir / name, ignore_errors=True)
                for leftover in (p for p in self.by_name[name].writes if "/" not in p):  # its files beside the folders
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
        order = {st.name: i for i, st in enumerate(self.stages)}
        done = [order[s] for s in self.state["stages"] if s in order]
        for key in changed:
            first = order[first_reader(self.stages, key, self.recipe).name]
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

    @property
    def by_name(self) -> dict[str, Stage]:
        return {s.name: s for s in self.stages}
