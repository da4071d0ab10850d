"""What a run folder's results are, typed (:class:`RunResults`), and its state file, checked.
Each stage writes its results once, in its own folder (evaluation summaries, comparisons, the
preflight report, the GRPO log) and reads them back itself (its record's ``results``;
``kernel.read_results`` loops over the stages); state.json holds only status, timings and
paths. The run report, the model card and the Python API's ``RunResult`` all read a run that way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aha.eval.files import read_json

from ..config.schema import RecipeError

STATE_FILE = "state.json"
RECIPE_FILE = "recipe.yaml"  # the recipe as run
LOG_FILE = "run.log"
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
    rft: dict[str, Any] | None = None  # rft/rft.json: each round's counts, when RFT took GRPO's place
    training: dict[str, Any] = field(default_factory=dict)  # GRPO's warnings and reward errors
    exports: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] | None = None  # export/verification.json: the exports loaded as a user loads them


def read_json_if_there(path: Path, kind: type = dict) -> Any:
    """A result file a stage wrote, or None where there is none."""
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
