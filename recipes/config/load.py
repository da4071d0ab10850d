"""Recipe YAML -> :class:`Recipe`: read the file, apply ``--set key=value`` overrides,
sort each section's keys into ours and TRL's, coerce each value to its field's type,
then validate.

YAML 1.1 reads ``off``, ``no`` and ``on`` as booleans. Here such a word stays a word
until its field says what it is: a string field (``grpo.preflight: off``) takes the word
as written, a boolean field its truth value.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .schema import TRL_CLASS, EvalTask, GRPOStage, Recipe, RecipeError, RewardSpec, SFTStage
from .validate import validate

# The keys of the sft/grpo sections that are ours; every other key must be a TRL config field.
_STAGE_OWN = {"sft": SFTStage, "grpo": GRPOStage}
# Set by the runner from other sections; a recipe must not set them twice.
_RUNNER_OWNED = {"output_dir", "reward_weights", "seed", "use_cpu", "max_length"}
# TRL fields a recipe may not set, with the reason.
_REFUSED = {"push_to_hub": "aha publishes through export.push_to_hub (one way to publish, with its checks)",
            "hub_token": "secrets never go in a recipe: set HF_TOKEN in the environment",
            "hub_model_id": "aha publishes through export.push_to_hub"}


class YamlWord(str):
    """A YAML boolean as it was written (``off``), with the value YAML gives it (``False``)."""

    value: bool

    def __new__(cls, text: str, value: bool) -> YamlWord:
        word = super().__new__(cls, text)
        word.value = value
        return word


class _WordLoader(yaml.SafeLoader):
    """SafeLoader that keeps boolean words as :class:`YamlWord`."""


def _bool_word(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> YamlWord:
    return YamlWord(node.value, yaml.SafeLoader.construct_yaml_bool(loader, node))


_WordLoader.add_constructor("tag:yaml.org,2002:bool", _bool_word)


def parse_yaml(text: str) -> Any:
    value = yaml.load(text, Loader=_WordLoader)  # noqa: S506 - a SafeLoader subclass
    _refuse_cycles(value)
    return value


def _refuse_cycles(value: Any, inside: tuple[int, ...] = ()) -> None:
    """A YAML alias that refers to its own anchor (``a: &x [*x]``) builds a list that holds itself:
    no recipe value is that, and reading it would recurse without end.

    >>> _refuse_cycles(yaml.safe_load("{a: &x [1, 2], b: *x}"))  # a shared alias is fine
    >>> _refuse_cycles(yaml.safe_load("a: &x [1, *x]"))
    Traceback (most recent call last):
    ...
    aha.recipes.config.schema.RecipeError: a YAML alias refers to its own anchor (a value that holds itself); write the value out
    """
    if isinstance(value, (dict, list)):
        if id(value) in inside:
            raise RecipeError("a YAML alias refers to its own anchor (a value that holds itself); write the value out")
        for item in value.values() if isinstance(value, dict) else value:
            _refuse_cycles(item, (*inside, id(value)))


def plain(value: Any) -> Any:
    """``value`` with every :class:`YamlWord` turned into its truth value."""
    if isinstance(value, YamlWord):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


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
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text, so not a recipe") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
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
    recipe = _build(Recipe, data, "")
    recipe.source_dir = Path(base_dir) if base_dir else None
    validate(recipe, recipe.source_dir, processes)
    return recipe


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    own = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
    kwargs: dict[str, Any] = {}
    stage = next((k for k, v in _STAGE_OWN.items() if v is cls), None)
    trl_fields = _trl_fields(stage) if stage else {}
    trl: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if stage and key not in own:
            if key not in trl_fields:
                raise RecipeError(f"unknown key {path!r}: neither one of ours ({', '.join(sorted(own - {'trl'}))}) "
                                  f"nor a TRL {TRL_CLASS[stage]} field")
            if key in _RUNNER_OWNED:
                raise RecipeError(f"{path}: set by the runner from the recipe; do not set it here")
            if key in _REFUSED:
                raise RecipeError(f"{path}: not allowed here: {_REFUSED[key]}")
            trl[key] = _coerce(plain(value), trl_fields[key], path)
            continue
        if key not in own:
            raise RecipeError(f"unknown key {path!r}; known here: {', '.join(sorted(own))}")
        kwargs[key] = _coerce(value, hints[key], path) if key != "trl" else plain(value)
    if stage:
        kwargs["trl"] = {**kwargs.get("trl", {}), **trl}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise RecipeError(f"{where or 'recipe'}: {err}") from None


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """``value`` as the type ``hint`` says, or a RecipeError naming ``path``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(value, YamlWord) and not _wants_text(hint):
        value = value.value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, path)
            except RecipeError as err:
                errors.append(err)
        raise errors[0] if errors else RecipeError(f"{path}: unexpected {_show(value)}")
    if hint is Any or hint is typing.Any:
        return plain(value)
    if dataclasses.is_dataclass(hint):
        if hint is RewardSpec:
            return _reward_spec(value, path)
        return _build(hint, value, path)
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            raise RecipeError(f"{path}: expected a list, got {_show(value)}")
        return [_coerce(v, args[0] if args else Any, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {_show(value)}")
        return plain(dict(value))
    if origin is typing.Literal:
        if value not in args:
            raise RecipeError(f"{path} must be one of {', '.join(map(str, args))}, not {_show_value(value)}")
        return str(value) if isinstance(value, YamlWord) else value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: expected true/false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{path}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML reads 5e-6 as a string; accept what float() accepts
            try:
                value = float(value)
            except ValueError:
                raise RecipeError(f"{path}: expected a number, got {_show(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{path}: expected a number, got {_show(value)}")
        return value  # an int stays an int: TRL reads warmup_steps 5 as steps and 0.1 as a ratio
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{path}: expected a string, got {_show(value)}")
        return str(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value).value
        except ValueError:
            raise RecipeError(f"{path}: must be one of {[e.value for e in hint]}, not {_show(value)}") from None
    return value  # types we do not check (TRL's richer fields) go to TRL, which checks them


def _reward_spec(value: Any, path: str) -> RewardSpec:
    """A reward as a recipe writes it: its name alone, or a mapping whose keys other than name, weight,
    options and sha256 are its options (``{name: reward_model, model: PATH}``); in Python, the function
    itself, or a mapping whose name is one."""
    if callable(value) or isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise RecipeError(f"{path}: expected a reward name or a mapping with name, got {_show(value)}")
    own = {f.name for f in dataclasses.fields(RewardSpec) if not f.metadata.get("derived")}
    extra = {k: plain(v) for k, v in value.items() if k not in own}
    value = {k: v for k, v in value.items() if k in own}
    if extra:
        if not isinstance(value.get("options", {}), dict):
            raise RecipeError(f"{path}.options: expected a mapping, got {_show(value['options'])}")
        value["options"] = {**extra, **value.get("options", {})}
    function = value.get("name") if callable(value.get("name")) else None
    if function is not None:
        value["name"] = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', repr(function))}"
    spec = _build(RewardSpec, value, path)
    spec.function = function
    return spec


def _wants_text(hint: Any) -> bool:
    """Does a field of this type take a YAML boolean word as text (a string or a Literal of strings)?"""
    if hint is str:
        return True
    if typing.get_origin(hint) is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return bool(arms) and all(_wants_text(a) for a in arms)
    return False


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _show_value(value: Any) -> str:
    return repr(str(value) if isinstance(value, YamlWord) else value)[:40]


def _trl_fields(stage: str) -> dict[str, Any]:
    import trl

    cls = getattr(trl, TRL_CLASS[stage])
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}
