"""THE reader of a run folder's results. Each stage writes its results once, in its own
folder (evaluation summaries, comparisons, the preflight report, the GRPO log); state.json
holds only status, timings and paths. The run report, the model card and the Python API's
``RunResult`` all read a run through :func:`read_results`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aha.eval.files import read_json

from ..config.schema import RecipeError
from .table import COMPARE, EXPORT, GRPO, PREFLIGHT, STAGES

STATE_FILE = "state.json"
STATE_HINT = ("it is not a state file aha wrote, or was cut short; to start the run over, delete the folder "
              "(or use another --out)")


@dataclass
class RunResults:
    """What a run folder holds, typed."""

    run_dir: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # state.json: seconds and what each recorded
    recipe: dict[str, Any] = field(default_factory=dict)  # the recipe as run
    evaluations: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # stage -> task -> metrics
    asked: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> its instruction and grader, as run
    engines: dict[str, dict[str, str]] = field(default_factory=dict)  # stage -> task -> the engine that generated
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)  # "task/label" -> compare report (no ids)
    sampled: dict[str, dict[str, Any]] = field(default_factory=dict)  # "task-sampled/label" -> pass-rate comparison
    preflight: dict[str, Any] | None = None
    grpo_log: list[dict[str, Any]] | None = None
    training: dict[str, Any] = field(default_factory=dict)  # GRPO's warnings and reward errors
    exports: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] | None = None  # export/verification.json: the exports loaded as a user loads them


def _json(path: Path, kind: type = dict) -> Any:
    return read_json(path, kind=kind) if path.is_file() else None


def read_state(run_dir: Path, required: bool = True) -> dict[str, Any]:
    """A run folder's state.json, checked, so a damaged file is one line, not a traceback later;
    ``{}`` for a folder with none yet unless ``required``.

    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> read_state(folder, required=False)
    {}
    >>> _ = (folder / STATE_FILE).write_text(json.dumps({"stages": {}, "wrote": {"export": ["../../home/me"]}}))
    >>> read_state(folder)
    Traceback (most recent call last):
    ...
    aha.recipes.config.schema.RecipeError: ...: its record of the files aha wrote is damaged or points outside the run folder (...)
    """
    path = Path(run_dir) / STATE_FILE
    if not required and not path.is_file():
        return {}
    state = read_json(path, STATE_HINT)
    stages = state.get("stages", {})
    if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()) or not isinstance(
            state.get("recipe", {}), dict):
        raise RecipeError(f"{path}: not the state of a run ({STATE_HINT})")
    wrote = state.get("wrote", {})  # files each stage wrote, which --from deletes: never outside the run folder
    if not isinstance(wrote, dict) or not all(
            isinstance(files, list) and all(isinstance(f, str) and not Path(f).is_absolute() and ".." not in Path(f).parts
                                            for f in files) for files in wrote.values()):
        raise RecipeError(f"{path}: its record of the files aha wrote is damaged or points outside the run folder "
                          f"({STATE_HINT})")
    return state


def read_results(run_dir: str | Path, state: dict[str, Any] | None = None) -> RunResults:
    run_dir = Path(run_dir)
    if state is None:
        state = read_state(run_dir, required=False)
    done = state.get("stages", {})
    out = RunResults(run_dir=run_dir, stages=done, recipe=state.get("recipe", {}))
    for stage in STAGES:
        if stage.evaluates is None or stage.name not in done:
            continue
        tasks = done[stage.name].get("evaluations", [])
        summaries = {key: _json(run_dir / stage.name / key / "summary.json") for key in tasks}
        out.evaluations[stage.name] = {key: s["results"] for key, s in summaries.items() if s and "results" in s}
        for key, s in summaries.items():
            if s and isinstance(s.get("config"), dict):
                out.asked.setdefault(key, {k: s["config"].get(k) for k in ("instruction", "grader") if k in s["config"]})
                out.engines.setdefault(stage.name, {})[key] = str(s["config"].get("backend", "?"))
    for key in done.get(COMPARE.name, {}).get("comparisons", []):
        folder = run_dir / COMPARE.name / key
        pair = _json(folder / "compare.json")
        if pair:
            metrics = {m: {k: v for k, v in r.items() if not k.endswith("_ids")} for m, r in pair["metrics"].items()}
            out.comparisons[key] = {**pair, "metrics": metrics}
        rates = _json(folder / "pass_rates.json")
        if rates:
            out.sampled[key] = rates
    if PREFLIGHT.name in done:
        out.preflight = _json(run_dir / PREFLIGHT.name / "preflight.json")
    if GRPO.name in done:
        out.grpo_log = _json(run_dir / GRPO.name / "log_history.json", list)
        out.training = _json(run_dir / GRPO.name / "training.json") or {}
    out.exports = {k: v for k, v in done.get(EXPORT.name, {}).items() if k != "seconds" and isinstance(v, str)}
    out.verification = _json(run_dir / EXPORT.name / "verification.json")
    return out
