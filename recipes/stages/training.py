"""The training stages, written once for every backend: the SFT format warmup, the GRPO
preflight, and LoRA GRPO on top of the warmup's adapter. Each training stage writes
``<stage>/adapter`` when done and checkpoints on the way, so a killed run resumes from
its last checkpoint. The training stack is imported inside the stage functions, so the
stage table (``--dry-run``, the notebook) loads without it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aha.eval.backends import prompts_per_batch_for
from aha.eval.files import write_json
from aha.formats import Format

from ..config.schema import Recipe, RecipeError
from ..config.trl_args import completion_length
from ..training import LOG_HISTORY_FILE
from ..training.data import grpo_rows, sft_rows, training_problems
from .kernel import Context, Stage, adapter_of
from ..training.preflight import PREFLIGHT_FILE, check_verdicts, run_preflight, selected_rows
from .results import RunResults, read_json_if_there

if TYPE_CHECKING:
    from ..training.backends import TrainingBackend

log = logging.getLogger("aha")

TRAINING_FILE = "training.json"  # what a training stage reports beyond its adapter: warnings, reward errors


def trains(recipe: Recipe) -> bool:
    return recipe.sft.enabled or recipe.grpo.enabled


def final_adapter(run_dir: Path, recipe: Recipe) -> str:
    """The adapter the recipe ends with: GRPO's (or RFT's in its place), or the warmup's when GRPO is off."""
    return str(adapter_of(run_dir, (RFT if recipe.grpo.trainer == "rft" else GRPO) if recipe.grpo.enabled else SFT))


def start_adapter(ctx: Context) -> str | None:
    """The policy GRPO starts from: the warmup's adapter, or none (a fresh LoRA on the base model)."""
    return str(adapter_of(ctx.run.dir, SFT)) if ctx.recipe.sft.enabled else None


def sft_stage(ctx: Context) -> dict[str, Any]:
    from ..training.trainers import sft_trainer, train_and_save

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
    from ..training.trainers import reward_functions

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
    from ..training.trainers import colocated_engine_scope

    recipe, out = ctx.recipe, ctx.path()
    model, tokenizer, peft_config = ctx.backend.training_model(start_adapter(ctx))
    rows, longest = grpo_rows(recipe, ctx.fmt, tokenizer, training_problems(recipe, "grpo"))
    rows = selected_rows(rows, ctx.run.path(PREFLIGHT.name) if recipe.grpo.select == "learnable" else None)
    rollout = ctx.backend.rollout_args()
    if rollout.get("use_vllm") and not recipe.grpo.args.vllm_importance_sampling_correction:
        log.warning("grpo: vllm_importance_sampling_correction is off, so TRL logs no gap between the rollout "
                    "engine and the trained policy: aha cannot check that rollouts come from the policy being trained")
    with colocated_engine_scope(rollout):
        result, watch, main = _train_grpo(recipe, model, tokenizer, ctx.fmt, rows, longest, out, peft_config, rollout)
    if watch.stopped:
        raise RecipeError(watch.stopped)
    if main:
        write_json(out / TRAINING_FILE, {"warnings": watch.warned, "reward_errors": watch.error_counts()})
    ctx.backend.trained(adapter_of(ctx.run.dir, ctx.stage))
    return result


def _train_grpo(recipe: Recipe, model: Any, tokenizer: Any, fmt: Format, rows: list[dict[str, Any]], longest: int,
                out: Path, peft_config: Any, rollout: dict[str, Any]) -> tuple[dict[str, Any], Any, bool]:
    """GRPO's trainer, built, trained and saved; it (and a colocated rollout engine) is dropped on return."""
    from ..training.trainers import grpo_trainer, train_and_save

    trainer, watch = grpo_trainer(recipe, model, tokenizer, fmt, rows, completion_length(recipe, longest), out,
                                  peft_config=peft_config, **rollout)
    result = {"prompts": len(rows), **train_and_save(trainer, out, broken=lambda: watch.diverged)}
    return result, watch, trainer.accelerator.is_main_process


def rft_stage(ctx: Context) -> dict[str, Any]:
    """Rejection-sampling fine-tuning in GRPO's place: GRPO's prompts (the preflight's selection
    included), reward layers and sampling, from the warmup's adapter (else a fresh LoRA)."""
    from ..training.rft import run_rft
    from ..training.trainers import reward_functions

    recipe, start = ctx.recipe, start_adapter(ctx)
    tokenizer = ctx.backend.generator(start).tokenizer  # (each round loads its own policy)
    rows, longest = grpo_rows(recipe, ctx.fmt, tokenizer, training_problems(recipe, "grpo"))
    rows = selected_rows(rows, ctx.run.path(PREFLIGHT.name) if recipe.grpo.select == "learnable" else None)
    length = completion_length(recipe, longest)
    funcs, weights = reward_functions(recipe, ctx.fmt, tokenizer.eos_token, length)
    report = run_rft(recipe, ctx.fmt, ctx.backend, rows, length, funcs, weights, start, ctx.path(), longest)
    return {"prompts": len(rows), "steps": sum(r.get("steps", 0) for r in report["rounds"])}


def _read_rft(run_dir: Path, record: dict[str, Any] | None, out: RunResults) -> None:
    from ..training.rft import RFT_FILE

    if record is not None:
        out.rft = read_json_if_there(run_dir / RFT.name / RFT_FILE)


def _read_preflight(run_dir: Path, record: dict[str, Any] | None, out: RunResults) -> None:
    if record is not None:
        out.preflight = read_json_if_there(run_dir / PREFLIGHT.name / PREFLIGHT_FILE)


def _read_grpo(run_dir: Path, record: dict[str, Any] | None, out: RunResults) -> None:
    if record is not None:
        out.grpo_log = read_json_if_there(run_dir / GRPO.name / LOG_HISTORY_FILE, list)
        out.training = read_json_if_there(run_dir / GRPO.name / TRAINING_FILE) or {}


SFT = Stage("sft", "format warmup: supervised fine-tuning on worked solutions in the reasoning tags", sft_stage,
            writes=("sft/**",), enabled=lambda r: r.sft.enabled, reads=("sft",), every_process=True)
PREFLIGHT = Stage("preflight", "sample the starting policy exactly as GRPO will; stop on what would make GRPO "
                  "learn nothing", preflight_stage, writes=("preflight/**",),
                  enabled=lambda r: r.grpo.enabled and r.grpo.preflight != "off", reads=("grpo",),
                  reads_except=("grpo.trainer",),
                  results=_read_preflight)
GRPO = Stage("grpo", "LoRA GRPO on the recipe's reward layers", grpo_stage, writes=("grpo/**",),
             enabled=lambda r: r.grpo.enabled and r.grpo.trainer == "grpo", reads=("grpo",), every_process=True,
             results=_read_grpo)
RFT = Stage("rft", "rejection-sampling fine-tuning in GRPO's place: sample, keep what passes, fine-tune; in rounds",
            rft_stage, writes=("rft/**",), enabled=lambda r: r.grpo.enabled and r.grpo.trainer == "rft",
            reads=("grpo", "rft", "sft"), results=_read_rft)
