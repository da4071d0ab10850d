"""From one GPU to a node with the same recipe: the command lines aha builds for
``accelerate launch`` (DDP, DeepSpeed ZeRO-2/3, FSDP2, with the configs shipped in
``recipes/launch/accelerate/``) and for TRL's ``vllm-serve`` (GRPO rollouts on a separate GPU).
Nothing here distributes anything itself: accelerate, TRL and vLLM do."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config.schema import Recipe, RecipeError
from ..config.trl_args import check_global_batch

CONFIG_DIR = Path(__file__).parent / "accelerate"
CONFIGS = ("ddp", "zero2", "zero3", "fsdp2")


def accelerate_config(name_or_path: str) -> Path:
    """A shipped config by name (ddp, zero2, zero3, fsdp2), or the user's own config file."""
    if name_or_path in CONFIGS:
        return CONFIG_DIR / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if not path.is_file():
        raise RecipeError(f"--config {name_or_path}: neither a shipped config ({', '.join(CONFIGS)}) nor a file")
    return path


def read_launch_config(config: Path) -> dict:
    """An accelerate config file as a mapping, or one line saying what is wrong with it."""
    import yaml

    from aha.eval.files import read_text

    try:
        data = yaml.safe_load(read_text(config)) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"--config {config}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"--config {config}: an accelerate config is a mapping (key: value), not a "
                          f"{type(data).__name__}")
    return data


def check_launch_needs(config: Path) -> None:
    """What the config's distributed type needs must be installed: DeepSpeed is not a
    dependency of aha (it builds from source), so say how to get it before launching."""
    import importlib.util

    kind = read_launch_config(config).get("distributed_type")
    if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise RecipeError(f"--config {config.stem} launches DeepSpeed, which is not installed: "
                          "DS_BUILD_OPS=0 pip install 'aha-recipes[deepspeed]' (builds in under a minute, no CUDA needed)")


def launch_precision(recipe: Recipe) -> str:
    """accelerate's ``--mixed_precision`` for this recipe: the one TRL's flags carry (built by the
    precision rule, :func:`aha.recipes.config.machine.precision`, unless the recipe set bf16/fp16).

    >>> from aha.recipes.api import load_recipe
    >>> launch_precision(load_recipe("tiny-qwen3-smoke"))  # a CPU machine: float32
    'no'
    """
    picks = {"bf16" if a.bf16 else "fp16" if a.fp16 else "no"
             for a, on in ((recipe.sft.args, recipe.sft.enabled), (recipe.grpo.args, recipe.grpo.enabled)) if on}
    if len(picks) > 1:
        raise RecipeError(f"sft and grpo train at different precisions ({' and '.join(sorted(picks))}); one launch "
                          "runs one: set the same bf16/fp16 in both")
    return picks.pop() if picks else "no"


def check_config_precision(config: Path, precision: str) -> None:
    """A config of the user's that names another mixed precision than the run's is refused:
    DeepSpeed would stop on the mismatch after the model loaded."""
    named = read_launch_config(config).get("mixed_precision")
    if named is not None and str(named) != precision:
        raise RecipeError(f"--config {config}: mixed_precision {named} contradicts this run's precision ({precision}, "
                          "from model.dtype and TRL's bf16/fp16); remove the line from the config (aha passes it) or "
                          "change model.dtype")


def accelerate_command(recipe: Recipe, config: str, num_processes: int, run_args: list[str]) -> list[str]:
    """``accelerate launch`` running ``aha run`` with ``run_args`` on ``num_processes`` processes.
    The recipe's GRPO batch is per device; the global batch must split into whole groups.

    >>> from aha.recipes.api import load_recipe
    >>> cmd = accelerate_command(load_recipe("tiny-qwen3-smoke"), "ddp", 2, ["tiny-qwen3-smoke"])
    >>> cmd[1:10], cmd[-4:]
    (['-m', 'accelerate.commands.launch', '--quiet', '--config_file', '...ddp.yaml', '--num_processes', '2', '--mixed_precision', 'no'], ['-m', 'aha.recipes.cli', 'run', 'tiny-qwen3-smoke'])
    """
    if num_processes < 1:
        raise RecipeError(f"--num-processes must be at least 1, not {num_processes}")
    check_global_batch(recipe, num_processes)
    path = accelerate_config(config)
    check_launch_needs(path)
    precision = launch_precision(recipe)
    check_config_precision(path, precision)
    # --quiet: a failed process already said why in one line; accelerate's own stack trace would bury it
    return [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", str(path),
            "--num_processes", str(num_processes), "--mixed_precision", precision, "-m", "aha.recipes.cli", "run",
            *run_args]


def vllm_serve_command(recipe: Recipe, base: str) -> list[str]:
    """``trl vllm-serve`` for the recipe's model, as GRPO in server mode expects it: the base
    weights (TRL syncs the trained LoRA into them each step, merged), the recipe's dtype,
    maximum length, GPU share, host and port."""
    from ..config.machine import resolve_dtype

    m = recipe.model
    dtype = resolve_dtype(m.dtype)
    return [_trl_script(), "vllm-serve", "--model", base, "--dtype", dtype,
            "--max_model_len", str(m.max_seq_length), "--gpu_memory_utilization", str(m.gpu_memory_utilization),
            "--host", m.vllm_server_host, "--port", str(m.vllm_server_port)]


def _trl_script() -> str:
    """TRL's ``trl`` command, next to this Python if it is there (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "trl"
    return str(beside) if beside.is_file() else "trl"
