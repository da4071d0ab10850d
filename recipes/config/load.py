"""Recipe YAML -> :class:`Recipe`: read the file (YAML 1.2), apply ``--set key=value``
overrides, sort the sft/grpo sections' keys into ours and TRL's, then let pydantic type
and bound every value against the schema, then validate.

YAML 1.2 has two booleans, ``true`` and ``false``: ``off``, ``no`` and ``on`` are words
(``grpo.preflight: off``), and a boolean field written with one is refused, not guessed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from aha.formats import InputError
from aha.formats import yamlfile

from .schema import TRL_CLASS, EvalTask, GRPOStage, Recipe, RecipeError, RewardSpec, SFTStage, explain
from .trl_args import check_trl_value, trl_class
from .validate import validate

# The keys of the sft/grpo sections that are ours; every other key must be a TRL config field.
_STAGE_OWN = {"sft": SFTStage, "grpo": GRPOStage}
# Set by the runner from other sections; a recipe must not set them twice.
_RUNNER_OWNED = {"output_dir", "reward_weights", "seed", "use_cpu", "max_length"}
# TRL fields a recipe may not set, with the reason.
_REFUSED = {"push_to_hub": "aha publishes through export.push_to_hub (one way to publish, with its checks)",
            "hub_token": "secrets never go in a recipe: set HF_TOKEN in the environment",
            "hub_model_id": "aha publishes through export.push_to_hub"}


def parse_yaml(text: str) -> Any:
    """YAML 1.2 text as Python values (:func:`aha.formats.yamlfile.parse_yaml`), a problem as a RecipeError.

    >>> parse_yaml("[off, true, 5e-6, 012, 0x1f, 2026-12-07, .nan]")[:6]
    ['off', True, 5e-06, 12, 31, '2026-12-07']
    """
    try:
        return yamlfile.parse_yaml(text)
    except InputError as err:
        raise RecipeError(str(err)) from None


def as_today(stored: dict[str, Any]) -> dict[str, Any]:
    """A recipe mapping a run folder stored, read with today's schema: keys added to aha since
    at their defaults, keys aha no longer has (``data.heldout``, say) dropped, in the sections
    and in each evaluation task alike.

    >>> old = {"model": {"name": "m"}, "data": {"task": "arith", "heldout": 500}, "eval": {"tasks": [{"heldout": 9}]}}
    >>> new = as_today(old)
    >>> new["model"]["vllm_mode"], "heldout" in new["data"], new["eval"]["tasks"][0]["task"]
    ('colocate', False, 'arith')
    """
    defaults = Recipe().to_dict()
    task_defaults = dataclasses.asdict(EvalTask())
    out = {key: stored.get(key, value) for key, value in defaults.items()}
    for key, section in defaults.items():
        if isinstance(section, dict) and isinstance(stored.get(key), dict):
            out[key] = {**section, **{k: v for k, v in stored[key].items() if k in section}}
    tasks = out["eval"].get("tasks")
    if isinstance(tasks, list):
        out["eval"]["tasks"] = [{**task_defaults, **{k: v for k, v in t.items() if k in task_defaults}}
                                if isinstance(t, dict) else t for t in tasks]
    return out


def read_recipe_data(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe as a mapping with the overrides applied; not validated (that imports TRL,
    and Unsloth must be imported before TRL when the recipe uses it)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"no such recipe file: {path}")
    try:
        data = yamlfile.read_yaml(path, "recipe") or {}
    except InputError as err:
        raise RecipeError(str(err)) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, not {type(data).__name__}")
    data.setdefault("name", path.stem)
    for item in overrides or []:
        apply_override(data, item)
    return data


def apply_override(data: dict[str, Any], item: str) -> None:
    """``grpo.learning_rate=1e-5`` -> data["grpo"]["learning_rate"] = 1e-05 (YAML-typed)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set takes key=value, not {item!r}")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise RecipeError(f"--set {key}: the value {raw!r} is not valid YAML ({str(err).splitlines()[0]})") from None
    set_value(data, key.strip(), value)


def set_value(data: dict[str, Any], key: str, value: Any) -> None:
    """data[section][...][last] = value for ``key`` = ``section....last``, sections made as needed."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def recipe_from_dict(data: dict[str, Any], base_dir: str | Path | None = None, processes: int | None = None) -> Recipe:
    """A validated recipe from its mapping, for ``processes`` processes (default: this launch's)."""
    recipe = parse_recipe(data)
    recipe.source_dir = Path(base_dir) if base_dir else None
    validate(recipe, recipe.source_dir, processes)
    return recipe


_RECIPE = TypeAdapter(Recipe)


def parse_recipe(data: Any) -> Recipe:
    """The typed recipe from its mapping: every value typed and bounded by the schema (pydantic),
    the first mistake as one line naming its field.

    >>> parse_recipe({"lora": {"r": 0}})
    Traceback (most recent call last):
    ...
    aha.recipes.config.schema.RecipeError: lora.r must be >= 1, not 0
    >>> parse_recipe({"grpo": {"preflight": "off", "enabled": "off"}})
    Traceback (most recent call last):
    ...
    aha.recipes.config.schema.RecipeError: grpo.enabled: expected true or false, got str 'off' (YAML 1.2: only true and false are booleans)
    """
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: expected a mapping of sections, got {type(data).__name__}")
    data = dict(data)
    for stage in _STAGE_OWN:
        if isinstance(data.get(stage), dict):
            data[stage] = _split_trl(stage, data[stage])
    functions: list[Any] = []
    if isinstance(data.get("grpo"), dict) and isinstance(data["grpo"].get("rewards"), list):
        data["grpo"]["rewards"], functions = _reward_specs(data["grpo"]["rewards"])
    try:
        recipe = _RECIPE.validate_python(data)
    except ValidationError as err:
        raise RecipeError(_recipe_message(err.errors()[0])) from None
    for spec, function in zip(recipe.grpo.rewards, functions):
        spec.function = function
    return recipe


def recipe_json_schema() -> dict[str, Any]:
    """The recipe's JSON schema, for editors (the shipped recipes name ``recipe.schema.json``,
    which is this, written by ``aha schema``): pydantic's, without the fields no recipe writes,
    and with what the loader takes beyond the dataclasses (TRL's fields in sft and grpo; a reward
    written as its name, or with its options beside the name)."""
    from . import schema as sections

    out = _RECIPE.json_schema()
    for name, node in [("Recipe", out), *out["$defs"].items()]:
        derived = {f.name for f in dataclasses.fields(getattr(sections, name)) if not f.init}
        node["properties"] = {k: v for k, v in node["properties"].items() if k not in derived}
    defs = out["$defs"]
    for stage, cls in _STAGE_OWN.items():
        defs[cls.__name__]["additionalProperties"] = {"description": f"a field of TRL's {TRL_CLASS[stage]}"}
    defs["RewardSpec"]["additionalProperties"] = {"description": "an option of the reward, written beside its name"}
    rewards = defs["GRPOStage"]["properties"]["rewards"]
    rewards["items"] = {"anyOf": [{"type": "string", "description": "a reward's name"}, rewards["items"]]}
    return out


def _split_trl(stage: str, section: dict[str, Any]) -> dict[str, Any]:
    """A stage's section with every key that is not ours moved into its ``trl`` mapping, each
    checked as a field of TRL's config."""
    own = _own_fields(_STAGE_OWN[stage])
    fields = {f.name for f in dataclasses.fields(trl_class(stage)) if f.init}
    ours = {k: v for k, v in section.items() if k in own}
    written = ours.get("trl") or {}
    if not isinstance(written, dict):
        raise RecipeError(f"{stage}.trl: expected a mapping, got {type(written).__name__}")
    trl = {}
    for key, value in [*written.items(), *((k, v) for k, v in section.items() if k not in own)]:
        path = f"{stage}.{key}"
        if key not in fields:
            raise RecipeError(f"unknown key {path!r}: neither one of ours ({', '.join(sorted(own - {'trl'}))}) "
                              f"nor a TRL {TRL_CLASS[stage]} field")
        if key in _RUNNER_OWNED:
            raise RecipeError(f"{path}: set by the runner from the recipe; do not set it here")
        if key in _REFUSED:
            raise RecipeError(f"{path}: not allowed here: {_REFUSED[key]}")
        trl[key] = check_trl_value(stage, key, value)
    return {**ours, "trl": trl}


def _reward_specs(rewards: list[Any]) -> tuple[list[Any], list[Any]]:
    """Rewards as a recipe writes them, as RewardSpec mappings, and the Python functions among them.
    A reward is its name alone, or a mapping whose keys other than name, weight, options and sha256
    are its options (``{name: reward_model, model: PATH}``); in Python, the function itself, or a
    mapping whose name is one (its label is then module.qualname)."""
    own = _own_fields(RewardSpec)
    specs, functions = [], []
    for i, value in enumerate(rewards):
        if callable(value) or isinstance(value, str):
            value = {"name": value}
        function = None
        if isinstance(value, dict):
            extra = {k: v for k, v in value.items() if k not in own}
            value = {k: v for k, v in value.items() if k in own}
            if extra:
                if not isinstance(value.get("options", {}), dict):
                    raise RecipeError(f"grpo.rewards[{i}].options: expected a mapping, got "
                                      f"{type(value['options']).__name__}")
                value["options"] = {**extra, **value.get("options", {})}
            if callable(value.get("name")):
                function = value["name"]
                value["name"] = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', repr(function))}"
        specs.append(value)
        functions.append(function)
    return specs, functions


def _own_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _recipe_message(error: Any) -> str:
    """One line for pydantic's first error about a recipe: the path as the recipe writes it
    (``grpo.rewards[0].weight``), what the field allows (its bounds, its choices, its section's keys)."""
    node: Any = Recipe
    path, section, hint, metadata = "", Recipe, None, {}
    for part in error["loc"]:
        if isinstance(part, int) and typing.get_origin(node) is list:
            path, node = f"{path}[{part}]", typing.get_args(node)[0]
        elif dataclasses.is_dataclass(node):
            section, known = node, {f.name: f for f in dataclasses.fields(node) if f.init}
            path = f"{path}.{part}" if path else str(part)
            if part not in known:
                break
            hint, metadata = typing.get_type_hints(node)[part], known[part].metadata
            node = _unwrapped(hint)
        elif typing.get_origin(node) is dict:
            path, node = f"{path}.{part}", typing.get_args(node)[1]
        else:
            break  # a union's arm, named by pydantic: not part of the recipe's path
    return explain(error, path or "recipe", known=sorted(_own_fields(section)), hint=hint, bounds=metadata)


def _unwrapped(hint: Any) -> Any:
    """``X | None`` -> ``X`` (the type a nested value of the field has)."""
    arms = [a for a in typing.get_args(hint) if a is not type(None)]
    return arms[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(arms) == 1 else hint
