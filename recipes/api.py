"""The Python API, for notebooks and scripts: the same recipes, checks and stages as
``aha run`` (the command is a thin layer over these functions).

    from aha.recipes import load_recipe, run, try_model

    recipe = load_recipe("tiny-qwen3-smoke", overrides={"grpo.max_steps": 2})
    result = run(recipe, out="runs/demo")      # in a notebook, `result` shows the before/after tables
    try_model(result.run_dir, ["What is 17 + 25?"])

Every mistake in a recipe raises :class:`RecipeError` with the same one-line message the
command prints.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config.load import read_recipe_data, recipe_from_dict
from .config.schema import Recipe, RecipeError

SHIPPED = Path(__file__).parent


def find_recipe(value: str | Path) -> Path:
    """A recipe file path, or the name of a recipe shipped with aha (``smollm2-135m-arith-cpu``)."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = SHIPPED / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
    raise RecipeError(f"no such recipe: {value} (shipped recipes: {known})")


def _in_python(value: Any) -> bool:
    """Does an override value hold something YAML cannot write (your reward function itself)?"""
    if isinstance(value, dict):
        return any(_in_python(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_in_python(v) for v in value)
    return callable(value)


def _as_set_items(overrides: dict[str, Any] | list[str] | None) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        import yaml

        return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                for key, value in overrides.items() if not _in_python(value)]
    return list(overrides)


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | list[str] | None = None,
                out: str | Path | None = None, processes: int | None = None, rehearse: bool = False) -> Recipe:
    """A validated recipe: a shipped recipe's name or a YAML path, with ``overrides`` as
    ``{"grpo.max_steps": 5}`` (or ``["grpo.max_steps=5"]``, as ``--set`` takes them). Your reward
    functions can be passed directly: ``{"grpo.rewards": [my_reward, {"name": "format_exact", "weight": 0.5}]}``
    (each is recorded by its name and a hash of its source).
    When the recipe runs on Unsloth, Unsloth is imported here, before TRL. ``rehearse``: its rehearsal
    on this machine (:mod:`aha.recipes.rehearsal`), the overrides applied after it."""
    from .config.load import apply_override, set_value
    from .rehearsal import rehearse as rehearsal
    from .training.models import import_unsloth_first, unsloth_wanted

    path = find_recipe(name_or_path)
    data = read_recipe_data(path, [] if rehearse else _as_set_items(overrides))
    if rehearse:
        rehearsal(data)
        for item in _as_set_items(overrides):
            apply_override(data, item)
    for key, value in (overrides.items() if isinstance(overrides, dict) else ()):
        if _in_python(value):
            set_value(data, key, value)
    if unsloth_wanted(data):  # before anything imports transformers, TRL or PEFT
        import_unsloth_first(Path(out or Path("runs") / str(data["name"])) / "unsloth_compiled_cache")
    return recipe_from_dict(data, base_dir=path.parent, processes=processes)


@dataclass
class RunResult:
    """What a run left: its folder, the stages done, each evaluation's metrics, the paired
    comparisons and the export paths (read by :func:`aha.recipes.stages.table.read_run`,
    as the report is). In a notebook it shows itself as the report's tables and the
    before/after chart."""

    run_dir: Path
    stages: list[str]
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparisons: dict[str, Any] = field(default_factory=dict)
    sampled: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    results: Any = field(default=None, repr=False)

    @classmethod
    def read(cls, run_dir: Path, state: dict[str, Any] | None = None) -> RunResult:
        from .stages.report import REPORT_FILE
        from .stages.table import read_run

        results = read_run(run_dir, state)
        report = run_dir / REPORT_FILE
        return cls(run_dir=run_dir, stages=list(results.stages), evaluations=results.evaluations,
                   comparisons=results.comparisons, sampled=results.sampled, exports=results.exports,
                   report=report if report.is_file() else None, results=results)

    def _repr_markdown_(self) -> str:
        from .stages.evidence import result_tables

        lines = [f"**Run** `{self.run_dir}`: {' -> '.join(self.stages) or 'nothing done yet'}"]
        lines += result_tables(self.results)
        chart = self._chart()
        if chart:
            lines += ["", f"![before vs after](data:image/png;base64,{chart})"]
        if self.exports:
            lines += ["", "Exported: " + ", ".join(f"{k} `{v}`" for k, v in self.exports.items() if isinstance(v, str))]
        return "\n".join(lines)

    def _chart(self) -> str | None:
        """The whole recipe's before/after chart (compare.png), inline."""
        from .stages.table import COMPARE, COMPARISONS

        for png in sorted((self.run_dir / COMPARE.name).glob(f"*/{COMPARISONS[0].label}/compare.png")):
            return base64.b64encode(png.read_bytes()).decode()
        return None


def run(recipe: Recipe, out: str | Path | None = None, stop_after: str | None = None,
        restart_from: str | None = None) -> RunResult:
    """Run (or resume) every stage of ``recipe`` into ``out`` (default ``runs/<name>``);
    ``restart_from`` runs that stage and every later one again."""
    from .stages.runner import run_recipe

    run_dir = Path(out or Path("runs") / recipe.name)
    state = run_recipe(recipe, run_dir, recipe_dir=recipe.source_dir, stop_after=stop_after,
                       restart_from=restart_from)
    return RunResult.read(run_dir, state)


@dataclass
class Answers:
    """The same questions answered at each stage, side by side (a table in a notebook)."""

    questions: list[str]
    answers: dict[str, list[str]]  # stage -> one answer per question

    def _repr_markdown_(self) -> str:
        stages = list(self.answers)
        cell = lambda text: text.replace("|", "\\|").replace("\n", " ").strip()[:300]  # noqa: E731
        lines = ["| question | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
        for i, q in enumerate(self.questions):
            lines.append(f"| {cell(q)} | " + " | ".join(cell(self.answers[s][i]) for s in stages) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._repr_markdown_()




def try_model(run_dir: str | Path, questions: list[str], stages: tuple[str, ...] | None = None,
              max_new_tokens: int | None = None) -> Answers:
    """Greedy answers of the base model, after SFT and after GRPO (``stages``: those named,
    of base, sft, grpo, rft) to the same questions, each asked exactly as the recipe asks (its
    format's prompt)."""
    import yaml

    from aha.eval import HFBackend, Sampling, load_model
    from aha.eval.files import read_text
    from aha.formats import get_format

    from .config.machine import resolve_dtype
    from .stages.results import RECIPE_FILE
    from .stages.table import GRPO, RFT, SFT, adapter_of

    run_dir = Path(run_dir)
    recipe_path = run_dir / RECIPE_FILE
    if not recipe_path.is_file():
        raise RecipeError(f"{run_dir} is not a run folder (no {RECIPE_FILE})")
    try:
        recipe = yaml.safe_load(read_text(recipe_path))
        base = run_dir / "base" if (run_dir / "base").is_dir() else recipe["model"]["name"]
        fmt_name, max_tokens = recipe["format"], recipe["eval"]["max_new_tokens"]
        dtype = resolve_dtype(recipe["model"].get("dtype", "auto"))  # the precision the run evaluated at
    except (yaml.YAMLError, TypeError, KeyError, AttributeError):
        raise RecipeError(f"{recipe_path}: not the recipe aha wrote for this run (re-run it to write it again)") from None
    fmt = get_format(fmt_name)
    sampling = Sampling(max_new_tokens=max_new_tokens or max_tokens)
    answers: dict[str, list[str]] = {}
    adapters = {"base": None, **{s.name: adapter_of(run_dir, s) for s in (SFT, GRPO, RFT)}}
    for stage in stages or tuple(adapters):
        if stage not in adapters:
            raise RecipeError(f"unknown stage {stage!r}; known: {', '.join(adapters)}")
        adapter = adapters[stage]
        if adapter is not None and not adapter.is_dir():
            continue  # that stage has not run (or the recipe has none)
        model, tokenizer = load_model(str(base), adapter=str(adapter) if adapter else None, dtype=dtype)
        backend = HFBackend(model, tokenizer, batch_size=8)
        prompts = [fmt.build_prompt(tokenizer, q) for q in questions]
        answers[stage] = [g[0].text for g in backend.generate(prompts, sampling)]
    return Answers(list(questions), answers)


def state_of(run_dir: str | Path) -> RunResult:
    """The RunResult of an existing run folder (finished or not)."""
    run_dir = Path(run_dir)
    if not (run_dir / "state.json").is_file():
        raise RecipeError(f"{run_dir} is not a run folder (no state.json)")
    return RunResult.read(run_dir)
