"""The training stages, written once for every backend: the SFT format warmup, the GRPO
preflight, and LoRA GRPO on top of the warmup's adapter. Each training stage writes
``<stage>/adapter`` when done and checkpoints on the way, so a killed run resumes from
its last checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aha.eval.backends import prompts_per_batch_for
from aha.eval.files import write_json
from aha.formats import Format

from ..config.schema import Recipe, RecipeError
from ..config.trl_args import completion_length
from ..training.data import grpo_rows, sft_rows, training_problems
from ..training.trainers import grpo_trainer, reward_functions, sft_trainer, train_and_save
from .preflight import PREFLIGHT_FILE, check_verdicts, run_preflight, selected_rows
from .runner import Context
from .table import PREFLIGHT, SFT, adapter_of

if TYPE_CHECKING:
    from ..training.backends import TrainingBackend

log = logging.getLogger("aha")

TRAINING_FILE = "training.json"  # what a training stage reports beyond its adapter: warnings, reward errors


def start_adapter(ctx: Context) -> str | None:
    """The policy GRPO starts from: the warmup's adapter, or none (a fresh LoRA on the base model)."""
    return str(adapter_of(ctx.run.dir, SFT)) if ctx.recipe.sft.enabled else None


def sft_stage(ctx: Context) -> dict[str, Any]:
    model, tokenizer, peft_config = ctx.backend.training_model(None)
    rows = sft_rows(ctx.recipe, ctx.fmt, tokenizer, training_problems(ctx.recipe, "sft"))
    trainer = sft_trainer(ctx.recipe, model, tokenizer, rows, ctx.path(), peft_config=peft_config)
    result = {"examples": len(rows), **train_and_save(trainer, ctx.path())}
    ctx.backend.trained(adapter_of(ctx.run.dir, SFT))
    return result


def preflight(recipe: Recipe, fmt: Format, backend: TrainingBackend, adapter: str | None,
              out_dir: Path) -> dict[str, Any]:
    """Sample the policy ``adapter`` (None: the base model) on GRPO's prompts, exactly as GRPO
    will, and write the preflight report to ``out_dir`` (``aha preflight`` runs this alone)."""
    generator = backend.generator(adapter)
    tokenizer = generator.tokenizer
    rows, longest = grpo_rows(recipe, fmt, tokenizer, training_problems(recipe, "grpo"))
    length = completion_length(recipe, longest)
    funcs, weights = reward_functions(recipe, fmt, tokenizer.eos_token, length)
    with prompts_per_batch_for(generator, int(recipe.grpo.args.num_generations)):
        return run_preflight(recipe, fmt, generator, rows, length, funcs, weights, out_dir)


def preflight_stage(ctx: Context) -> dict[str, Any]:
    """The preflight on GRPO's starting policy; a fatal finding stops the run (``grpo.preflight: stop``)."""
    report = preflight(ctx.recipe, ctx.fmt, ctx.backend, start_adapter(ctx), ctx.path())
    check_verdicts(report, ctx.recipe.grpo.preflight, ctx.path(PREFLIGHT_FILE))
    return {"report": str(ctx.path(PREFLIGHT_FILE))}


def grpo_stage(ctx: Context) -> dict[str, Any]:
    """On top of the warmup's adapter (loaded trainable), else on a fresh LoRA."""
    recipe, out = ctx.recipe, ctx.path()
    model, tokenizer, peft_config = ctx.backend.training_model(start_adapter(ctx))
    rows, longest = grpo_rows(recipe, ctx.fmt, tokenizer, training_problems(recipe, "grpo"))
    rows = selected_rows(rows, ctx.run.path(PREFLIGHT.name) if recipe.grpo.select == "learnable" else None)
    rollout = ctx.backend.rollout_args()
    if rollout.get("use_vllm") and not recipe.grpo.args.vllm_importance_sampling_correction:
        log.warning("grpo: vllm_importance_sampling_correction is off, so TRL logs no gap between the rollout "
                    "engine and the trained policy: aha cannot check that rollouts come from the policy being trained")
    trainer, watch = grpo_trainer(recipe, model, tokenizer, ctx.fmt, rows, completion_length(recipe, longest), out,
                                  peft_config=peft_config, **rollout)
    result = {"prompts": len(rows), **train_and_save(trainer, out, broken=lambda: watch.diverged)}
    if watch.stopped:
        raise RecipeError(watch.stopped)
    if trainer.accelerator.is_main_process:
        write_json(out / TRAINING_FILE, {"warnings": watch.warned, "reward_errors": watch.error_counts()})
    ctx.backend.trained(adapter_of(ctx.run.dir, ctx.stage))
    return result
