"""TRL's configs, typed, built once: each stage's recipe values become the real
``SFTConfig`` / ``GRPOConfig`` at validation (so TRL's own checks run before anything
loads), and that object is what training uses. The run adds only what exists at run
time: the output folder, a completion length computed from the prompts, and the
backend's rollout engine, and the Python API's own reward weights (:func:`for_run`)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import typing
from typing import TYPE_CHECKING, Annotated, Any

from .machine import resolve_dtype, world_size
from .schema import TRL_CLASS, Recipe, RecipeError, explain

if TYPE_CHECKING:
    from aha.eval.backends import Sampling

# What a run sets on a validated config. TRL derives nothing from these in __post_init__, so
# setting them on a copy is exact; dataclasses.replace would re-run __post_init__, which refuses
# the generation_batch_size and steps_per_generation it derived itself the first time.
RUNTIME_FIELDS = frozenset({"output_dir", "max_completion_length", "use_vllm", "vllm_mode", "vllm_server_host",
                            "vllm_server_port", "reward_weights"})


def trl_class(stage: str) -> type:
    """The config class training builds: TRL's own, or, once Unsloth is imported, the subclass
    Unsloth put in its place (``UnslothGRPOConfig``), whose defaults and ``__init__`` differ."""
    import trl

    return getattr(trl, TRL_CLASS[stage])


def pristine_class(stage: str) -> type:
    """TRL's own config class, also after Unsloth replaced it: the deepest class of that name
    in the installed class's ancestry (Unsloth's subclass wears TRL's name and module)."""
    cls = trl_class(stage)
    return next(base for base in reversed(cls.__mro__) if base.__name__ == TRL_CLASS[stage])


def _defaults(cls: type) -> dict[str, Any]:
    """What each field is when a config of ``cls`` is built without it: its ``__init__``'s
    defaults (Unsloth's subclass declares its own there, over TRL's dataclass fields)."""
    import inspect

    fields = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
              for f in dataclasses.fields(cls) if f.init}
    signature = inspect.signature(cls.__init__).parameters
    return {name: signature[name].default if name in signature and signature[name].default is not
            inspect.Parameter.empty else value for name, value in fields.items()}


def trl_default(stage: str, name: str) -> Any:
    """TRL's own default for a field (read from its dataclass, never copied).

    >>> trl_default("grpo", "num_generations") >= 2
    True
    """
    defaults = _defaults(pristine_class(stage))
    if name not in defaults:
        raise KeyError(name)
    return defaults[name]


# GRPO fields that decide what is optimised. Unsloth's config rewrites each of them when it is left
# unset (an explicit dapo loss turns on truncated-completion masking and epsilon_high 0.28; importance
# sampling correction defaults off; an unset loss and beta become its own picks), so aha always passes
# them, at TRL's own defaults where the recipe is silent: one recipe, one objective, on either backend.
OBJECTIVE_FIELDS = ("loss_type", "beta", "scale_rewards", "mask_truncated_completions", "epsilon", "epsilon_high",
                    "importance_sampling_level", "vllm_importance_sampling_correction", "num_iterations", "top_entropy_quantile")


# Left to the installed class: SFT's loss_type (TRL's chunked_nll and Unsloth's nll are one loss; Unsloth
# computes it with its own fused kernel, which chunked_nll would bypass), and settings that change how fast or
# how often something runs, never what is trained (Unsloth's padding-free batching and cache emptying stay on).
PERFORMANCE_ONLY = frozenset({"padding_free", "torch_empty_cache_steps", "dataloader_pin_memory", "dataset_num_proc",
                              "include_tokens_per_second", "include_num_input_tokens_seen", "logging_steps",
                              "per_device_eval_batch_size", "eval_accumulation_steps"})
KEEP_INSTALLED = frozenset({("sft", "loss_type")} | {(stage, name) for stage in ("sft", "grpo")
                                                      for name in PERFORMANCE_ONLY})


def explicit_values(stage: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with TRL's own defaults written out wherever the installed config class
    would default (or, for GRPO's objective, resolve) otherwise, so TRL and Unsloth build the
    same config. ``epsilon_high`` unset means ``epsilon`` in TRL; Unsloth reads unset as 0.28."""
    pristine, installed = _defaults(pristine_class(stage)), _defaults(trl_class(stage))
    out = dict(values)
    for name, default in pristine.items():
        if name in out or (stage, name) in KEEP_INSTALLED:
            continue
        if installed.get(name, default) != default or (stage == "grpo" and name in OBJECTIVE_FIELDS):
            out[name] = default
    if stage == "grpo" and out.get("epsilon_high") is None:
        out["epsilon_high"] = out["epsilon"]
    return out


def trl_value(recipe: Recipe, stage: str, name: str) -> Any:
    """A TRL field as the recipe sets it, else TRL's default: for checks that must speak
    before the config is built (and so before TRL's own, less helpful, message)."""
    values = getattr(recipe, stage).trl
    return values[name] if name in values else trl_default(stage, name)


def build_trl_args(recipe: Recipe, stage: str, processes: int = 1) -> Any:
    """THE place a stage's TRL config is constructed, from :func:`trl_values`."""
    values = trl_values(recipe, stage, processes)
    try:
        return trl_class(stage)(**values)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{stage}: {str(err).splitlines()[0]}") from None


def trl_values(recipe: Recipe, stage: str, processes: int = 1) -> dict[str, Any]:
    """The keyword arguments of a stage's TRL config: the recipe's fields as written, plus
    what the runner owns (seed, precision, the SFT length, the reward weights), with TRL's
    own defaults written out where Unsloth's class would differ (:func:`explicit_values`).
    For a launch of ``processes`` validated from one process, the batch TRL checks is the
    launch's (``check_global_batch`` has already said anything wrong with it)."""
    import torch

    values = dict(getattr(recipe, stage).trl)
    if not torch.cuda.is_available():
        values["use_cpu"] = True
    # Mixed precision follows the model's dtype (one rule: bf16 on Ampere+, fp16 on a T4/V100, fp32 on CPU);
    # TRL would default bf16 on, which a T4 cannot run. A recipe's own bf16/fp16 win.
    dtype = resolve_dtype(recipe.model.dtype)
    values.setdefault("bf16", dtype == "bfloat16")
    values.setdefault("fp16", dtype == "float16")
    values.setdefault("report_to", "none")
    values.setdefault("logging_nan_inf_filter", False)  # a NaN or inf loss is logged as it is: GRPO's guard stops on it
    values["output_dir"] = os.devnull  # each run sets its own (for_run)
    if stage == "sft":
        values.update(seed=recipe.seed, max_length=recipe.sft.max_tokens)
    else:
        values.update(seed=grpo_seed(recipe), reward_weights=[spec.weight for spec in recipe.grpo.rewards])
        if processes > world_size() and "per_device_train_batch_size" in values:
            values["per_device_train_batch_size"] *= processes // world_size()
    return explicit_values(stage, values)


def for_run(args: Any, **runtime: Any) -> Any:
    """A copy of a validated TRL config with the run-time values set (``RUNTIME_FIELDS`` only)."""
    unknown = set(runtime) - RUNTIME_FIELDS
    if unknown:
        raise ValueError(f"not run-time fields: {sorted(unknown)}; they belong in the recipe")
    out = copy.copy(args)
    for name, value in runtime.items():
        setattr(out, name, value)
    return out


def rft_sft_args(recipe: Recipe, max_length: int, output_dir: str | os.PathLike[str]) -> Any:
    """An RFT round's SFTConfig: the sft section's, with rft's learning rate and steps where it sets
    them, room for a prompt and a completion as GRPO samples them, and the round's folder."""
    out = for_run(recipe.sft.args, output_dir=str(output_dir))
    out.max_length = max_length
    if recipe.rft.learning_rate is not None:
        out.learning_rate = recipe.rft.learning_rate
    if recipe.rft.max_steps is not None:
        out.max_steps = recipe.rft.max_steps
    return out


def grpo_seed(recipe: Recipe) -> int:
    """GRPO's seed: its own when the recipe sets one (to re-run GRPO from the same warmup), else the recipe's."""
    return recipe.grpo.seed if recipe.grpo.seed is not None else recipe.seed


def completion_length(recipe: Recipe, longest_prompt: int) -> int:
    """THE reading of ``grpo.max_completion_length``: a number as written; ``auto``: what
    the longest kept prompt leaves of ``model.max_seq_length`` (the Unsloth rule); empty:
    TRL's default, as the validated config holds it."""
    value = recipe.grpo.max_completion_length
    if value == "auto":
        left = recipe.model.max_seq_length - longest_prompt
        if left < 1:
            raise RecipeError(f"grpo.max_completion_length auto: the longest kept prompt ({longest_prompt} tokens) "
                              f"leaves nothing of model.max_seq_length {recipe.model.max_seq_length}")
        return left
    return int(value) if value is not None else int(recipe.grpo.args.max_completion_length)


# The values TRL's GRPOConfig takes for the fields checked before anything loads (TRL checks them only when its
# trainer starts, after the evaluation and the warmup have run). Pinned here for the TRL versions aha installs
# (1.15 with Unsloth, 1.16); tests/test_recipes.py checks them against the installed TRL's own field documentation
# and trainer code, so a TRL that adds or drops a value fails a test rather than a user's run.
TRL_CHOICES: dict[tuple[str, str], tuple[Any, ...]] = {
    ("grpo", "loss_type"): ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
    ("grpo", "scale_rewards"): (True, False, "group", "batch", "none"),
    ("grpo", "importance_sampling_level"): ("token", "sequence"),
    ("grpo", "multi_objective_aggregation"): ("sum_then_normalize", "normalize_then_sum"),
}


# Bounds of TRL's own fields (they are TRL's dataclass fields, so they cannot carry ours). TRL and
# PEFT accept many bad values silently: max_steps -5 trains by epochs, a negative learning rate ascends.
TRL_BOUNDS: dict[str, dict[str, float]] = {
    "learning_rate": {"gt": 0}, "num_train_epochs": {"gt": 0}, "per_device_train_batch_size": {"ge": 1},
    "gradient_accumulation_steps": {"ge": 1}, "warmup_steps": {"ge": 0}, "warmup_ratio": {"ge": 0, "le": 1},
    "weight_decay": {"ge": 0}, "logging_steps": {"gt": 0}, "save_steps": {"gt": 0}, "save_total_limit": {"ge": 1},
    "max_grad_norm": {"ge": 0}, "num_generations": {"ge": 2}, "temperature": {"gt": 0}, "top_p": {"gt": 0, "le": 1},
    "min_p": {"ge": 0, "lt": 1}, "top_k": {"ge": -1}, "beta": {"ge": 0}, "epsilon": {"gt": 0},
    "num_iterations": {"ge": 1}, "repetition_penalty": {"gt": 0},
}


@functools.cache
def _trl_adapter(stage: str, name: str) -> Any:
    """pydantic's check of one TRL field: TRL's own type for it, strict, finite, within TRL_BOUNDS."""
    from pydantic import ConfigDict, Field, TypeAdapter

    hint = typing.get_type_hints(trl_class(stage)).get(name, Any)
    return TypeAdapter(Annotated[hint, Field(**TRL_BOUNDS.get(name, {}))],
                       config=ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True))


def check_trl_value(stage: str, name: str, value: Any) -> Any:
    """``value`` for TRL's field ``name``, as written (an int stays an int: TRL reads warmup_steps 5
    as steps and 0.1 as a ratio), once it has TRL's type, lies in TRL_BOUNDS and is one of TRL_CHOICES.

    >>> check_trl_value("grpo", "top_p", 1.5)
    Traceback (most recent call last):
    ...
    aha.recipes.config.schema.RecipeError: grpo.top_p must be > 0 and <= 1, not 1.5
    """
    from pydantic import ValidationError

    path = f"{stage}.{name}"
    try:
        _trl_adapter(stage, name).validate_python(value)
    except ValidationError as err:
        raise RecipeError(explain(err.errors()[0], path, bounds=TRL_BOUNDS.get(name))) from None
    if name == "max_steps" and value != -1 and value < 1:
        raise RecipeError(f"{path} must be at least 1 (or -1: train by epochs), not {value}")
    allowed = TRL_CHOICES.get((stage, name))
    if allowed and not any(value == a and type(value) is type(a) for a in allowed):
        raise RecipeError(f"{path} must be one of {', '.join(map(str, allowed))}, not {value!r}")
    return value


def global_batch(recipe: Recipe, processes: int) -> tuple[int, int]:
    """(completions per optimizer step, prompts per step) of GRPO across ``processes``."""
    per_device = int(trl_value(recipe, "grpo", "per_device_train_batch_size"))
    completions = processes * per_device * int(trl_value(recipe, "grpo", "gradient_accumulation_steps"))
    return completions, completions // int(trl_value(recipe, "grpo", "num_generations"))


def global_batch_line(recipe: Recipe, processes: int) -> str:
    completions, prompts = global_batch(recipe, processes)
    return (f"GRPO global batch = {processes} processes x {trl_value(recipe, 'grpo', 'per_device_train_batch_size')} "
            f"per device x {trl_value(recipe, 'grpo', 'gradient_accumulation_steps')} accumulation = {completions} "
            f"completions, {trl_value(recipe, 'grpo', 'num_generations')} per prompt ({prompts} prompts per step)")


def check_global_batch(recipe: Recipe, processes: int) -> None:
    """TRL needs the completions of a step to split into whole groups of num_generations;
    it says so only once the model is loaded. Say it now, with the numbers."""
    if not recipe.grpo.enabled:
        return
    per_device = int(trl_value(recipe, "grpo", "per_device_train_batch_size"))
    generations = int(trl_value(recipe, "grpo", "num_generations"))
    steps_per_generation = recipe.grpo.trl.get("steps_per_generation")
    accumulation = int(steps_per_generation or trl_value(recipe, "grpo", "gradient_accumulation_steps"))
    if (processes * per_device * accumulation) % generations:
        raise RecipeError(f"grpo: {processes} processes x per_device_train_batch_size {per_device} x "
                          f"{'steps_per_generation' if steps_per_generation else 'gradient_accumulation_steps'} "
                          f"{accumulation} = {processes * per_device * accumulation} completions, which "
                          f"do not split into groups of num_generations {generations}")


def sampler(recipe: Recipe, max_new_tokens: int, n: int, seed: int) -> Sampling:
    """Sampling at GRPO's settings (temperature, top_p, top_k, min_p), with its own length, count
    and seed; it reads nothing else of the recipe (the evaluations after training sample this way)."""
    from aha.eval.backends import Sampling

    args = recipe.grpo.args
    return Sampling(max_new_tokens=max_new_tokens, temperature=float(args.temperature), top_p=float(args.top_p),
                    top_k=max(0, int(args.top_k or 0)), min_p=float(args.min_p or 0.0), n=n, seed=seed)


def grpo_sampling(recipe: Recipe, max_completion_length: int) -> Sampling:
    """Exactly how GRPO will sample: its temperature, top_p, top_k, min_p, group size and length."""
    return sampler(recipe, max_completion_length, int(recipe.grpo.args.num_generations), grpo_seed(recipe))
