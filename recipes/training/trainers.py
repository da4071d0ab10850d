"""The trainers both backends use: TRL's SFTTrainer and GRPOTrainer built from the
recipe's validated configs, training that resumes from its last complete checkpoint,
and what GRPO logs and warns about while it runs."""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from aha.eval.files import write_json
from aha.formats import Format
from aha.rewards import get_reward, reward_kind, reward_options

from ..config.schema import Recipe, RecipeError
from ..config.trl_args import for_run
from . import LOG_HISTORY_FILE

log = logging.getLogger("aha")
PASS_RATE_METRIC = "answer_pass"  # logged per step: sampled completions that follow the format and are right
ROLLOUT_GAP = "sampling/sampling_logp_difference/mean"  # TRL's, with vLLM's importance-sampling correction on
ROLLOUT_GAP_MAX = "sampling/sampling_logp_difference/max"


def last_checkpoint(out_dir: Path) -> str | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a
    checkpoint cut short by a kill has none; one whose files a full disk or a damaged
    drive left unreadable is skipped too (said in the log), for the one before it."""
    folder = out_dir / "checkpoints"
    candidates = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
                        if p.name.split("-")[-1].isdigit() else -1, reverse=True)
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if (path / "trainer_state.json").is_file():  # finished writing once, damaged since: worth a word
            log.warning("not resuming from %s: %s", path, problem)
    return None


def checkpoint_problem(path: Path) -> str | None:
    """What makes a checkpoint folder unusable (None when it can be resumed from)."""
    import torch
    from safetensors import safe_open

    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    for file in sorted(path.iterdir()):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as weights:
                    weights.keys()
            elif file.suffix in (".pt", ".pth", ".bin"):
                torch.load(file, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any reader's complaint means the file is damaged
            return f"{file.name} is unreadable ({type(err).__name__})"
    return None


def train_and_save(trainer: Any, out_dir: Path, broken: Any = None) -> dict[str, Any]:
    """Train (from the last complete checkpoint, if any), then save the adapter and the log.
    ``broken`` (a callable): why the weights training ended with must not be saved (None: save)."""
    resume = last_checkpoint(out_dir)
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    why = broken() if broken else None
    if why:
        raise RecipeError(why)
    # Every process takes part (DeepSpeed ZeRO-3 and FSDP gather the sharded weights); the main one writes.
    trainer.save_model(str(out_dir / "adapter"))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(out_dir / "adapter"))
        write_json(out_dir / LOG_HISTORY_FILE, trainer.state.log_history)
    trainer.accelerator.wait_for_everyone()
    return {"steps": trainer.state.global_step}


def _allow_another_accelerator() -> None:
    """GRPO after SFT is a second Trainer, so a second Accelerator, in one process. Under
    DeepSpeed accelerate refuses a second one with its plugin unless the first one's state
    is wiped, which is what transformers itself does between hyperparameter-search trials.
    A state that says "distributed" after its process group is gone (a vLLM engine that
    made one has shut down, as happens when a notebook runs a second recipe) is wiped too:
    kept, it would wait at a barrier of a group that no longer exists."""
    import torch.distributed as dist
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    kind = AcceleratorState._shared_state.get("distributed_type") or PartialState._shared_state.get(
        "distributed_type")
    stale = kind not in (None, DistributedType.NO) and not (dist.is_available() and dist.is_initialized())
    if kind == DistributedType.DEEPSPEED or stale:
        AcceleratorState._reset_state(reset_partial_state=stale)


COLOCATE_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def colocated_engine_scope(rollout: dict[str, Any]):
    """TRL's colocate mode sets the launch variables (:data:`COLOCATE_VARIABLES`) for the rest of the process and
    its vLLM engine makes a process group. On one process (no launch made them), both are undone when GRPO is
    done, so the next recipe in this process (a notebook's second run, a test's) starts as the first did:
    kept, its Trainer would take the stale variables for a launch and wait on a port the old group holds."""
    if rollout.get("vllm_mode") != "colocate":
        yield
        return
    import gc

    import torch.distributed as dist

    saved = {name: os.environ.get(name) for name in COLOCATE_VARIABLES}
    had_group = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        if not had_group:
            gc.collect()  # the trainer and its engine, dropped by the stage, go first
            try:
                from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

                destroy_model_parallel()
                destroy_distributed_environment()
            except ImportError:
                pass
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def sft_trainer(recipe: Recipe, model: Any, tokenizer: Any, rows: list[dict[str, str]], out_dir: Path,
                peft_config: Any = None, args: Any = None) -> Any:
    """TRL's SFTTrainer on prompt/completion ``rows``: the warmup's (``args`` None: the sft section's
    config), or an RFT round's (its own config)."""
    from datasets import Dataset
    from trl import SFTTrainer

    _allow_another_accelerator()
    args = args or for_run(recipe.sft.args, output_dir=str(out_dir / "checkpoints"))
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=peft_config)


def reward_functions(recipe: Recipe, fmt: Format, eos_token: str | None,
                     max_completion_length: int | None = None) -> tuple[list[Any], list[float]]:
    """The recipe's reward layers, bound; a layer that takes the completion length limit
    (``max_completion_length``) gets GRPO's own unless its options set one."""
    funcs, weights = [], []
    for spec in recipe.grpo.rewards:
        options = dict(spec.options)
        if max_completion_length and "max_completion_length" in reward_options(spec.name, recipe.grpo.reward_mode):
            options.setdefault("max_completion_length", max_completion_length)
        if recipe.grpo.reward_mode == "faithful" and eos_token and spec.name in ("format_exact", "check_answer",
                                                                                 "check_answer_numeric",
                                                                                 "match_format_exactly"):
            options.setdefault("eos_token", eos_token)
        funcs.append(get_reward(spec.function or spec.name, format=fmt, mode=recipe.grpo.reward_mode, **options))
        weights.append(spec.weight)
    return funcs, weights


def test_rewards(recipe: Recipe, fmt: Format, sample: int = 4) -> None:
    """Call each reward of the user's (a function of theirs, a reward model) once as TRL will, on
    ``sample`` training rows with a right and a wrong completion each, before anything else loads:
    one that raises or returns the wrong shape or a non-number is one line naming it."""
    from aha.rewards import RewardModel, UserReward
    from aha.rewards.references import test_call

    from .data import training_problems

    funcs, _ = reward_functions(recipe, fmt, None)
    own = [(i, f) for i, f in enumerate(funcs) if isinstance(f, (UserReward, RewardModel))]
    if not own:
        return
    problems = training_problems(recipe, "grpo")[:sample]
    completions = [fmt.render_completion(p.solution or p.answer, answer) for p in problems
                   for answer in (p.answer, "0" if p.answer != "0" else "1")]
    rows = [p for p in problems for _ in range(2)]
    columns: dict[str, list[Any]] = {"prompt": [p.question for p in rows], "question": [p.question for p in rows],
                                     "answer": [p.answer for p in rows], "id": [p.id for p in rows]}
    for key in {k for p in problems for k in p.columns}:
        columns[key] = [p.columns.get(key) for p in rows]
    for i, fn in own:
        test_call(fn, f"grpo.rewards[{i}] ({recipe.grpo.rewards[i].name})", completions, columns)


def grpo_trainer(recipe: Recipe, model: Any, tokenizer: Any, fmt: Format, rows: list[dict[str, str]],
                 max_completion_length: int, out_dir: Path, peft_config: Any = None,
                 rewards: tuple[list[Any], list[float]] | None = None, **rollout: Any) -> tuple[Any, Any]:
    """The GRPOTrainer and its RewardWatch; ``rollout`` (use_vllm, vllm_mode, ...) comes from
    the backend. ``rewards`` (functions, weights) replaces the recipe's reward list (Python
    API: your own rewards)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    _allow_another_accelerator()
    funcs, weights = (list(rewards[0]), list(rewards[1])) if rewards else reward_functions(
        recipe, fmt, tokenizer.eos_token, max_completion_length)
    watch = RewardWatch(recipe, funcs, max_completion_length)
    funcs[0] = PassRateLogged(funcs[0], fmt)
    if rewards:
        rollout["reward_weights"] = weights
    args = for_run(recipe.grpo.args, output_dir=str(out_dir / "checkpoints"),
                   max_completion_length=max_completion_length, **rollout)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[watch])
    log.info("grpo: max_completion_length %d; the loss starts near 0 by construction (advantages are zero-mean "
             "per group): watch the reward means, not the loss", max_completion_length)
    return trainer, watch


class PassRateLogged:
    """A reward function that also logs, through TRL's ``log_metric``, the share of the
    batch's completions that follow the format with the right answer (the eval's
    ``strict``). It scores exactly as the reward it wraps, under the same name."""

    def __init__(self, reward: Any, fmt: Format):
        self.reward, self.fmt = reward, fmt
        self.__name__ = getattr(reward, "__name__", type(reward).__name__)

    def __getattr__(self, name: str) -> Any:  # errors, layer_name, ...: the wrapped reward's
        if name == "reward":
            raise AttributeError(name)
        return getattr(self.reward, name)

    def __call__(self, completions: list[Any], log_metric: Any = None, **columns: Any) -> list:
        scores = self.reward(completions=completions, **columns)
        if log_metric is not None:
            log_metric(PASS_RATE_METRIC, sum(strict_passes(self.fmt, completions, columns.get("answer"))) /
                       max(1, len(completions)))
        return scores


def strict_passes(fmt: Format, completions: list[Any], answers: list[str] | None) -> list[bool]:
    """Per completion: the format followed and the answer right (the eval's strict verdict).

    >>> from aha.formats import get_format
    >>> strict_passes(get_format("unsloth"), ["x<end_working_out><SOLUTION>7</SOLUTION>", "<SOLUTION>7</SOLUTION>"],
    ...               ["7", "7"])
    [True, False]
    """
    from aha.formats import answers_match
    from aha.rewards import completion_text

    answers = answers or [""] * len(completions)
    texts = [completion_text(c) or "" for c in completions]
    return [fmt.check_format(t) and answers_match(fmt.extract_answer(t), str(a)) for t, a in zip(texts, answers)]


class RewardWatch(TrainerCallback):
    """Warnings users need during GRPO, each printed once: most completions truncated, a
    format reward never positive after N steps, all rewards equal within every group."""

    def __init__(self, recipe: Recipe, reward_funcs: list[Any], max_completion_length: int):
        """``reward_funcs``: the reward callables (or their names); those that count their
        errors (:class:`aha.rewards.Reward`) are watched for completions they failed on."""
        self.recipe, self.max_len = recipe, max_completion_length
        self.funcs = [f for f in reward_funcs if not isinstance(f, str)]
        self.names = [f if isinstance(f, str) else f.__name__ for f in reward_funcs]
        self.format_names = [n for n, f in zip(self.names, reward_funcs) if reward_kind(f) == "format"]
        self.best: dict[str, float] = {}
        self.first: dict[str, float] = {}
        self.warned: list[str] = []
        self.errors: dict[str, int] = {}  # completions each reward raised on (scored None), so far
        self.gap_run = 0  # logged steps in a row whose rollout log-prob gap was above the stop threshold
        self.stopped: str | None = None  # why GRPO was stopped, if it was
        self.diverged: str | None = None  # why GRPO was stopped with weights not worth saving (NaN/inf)

    def _watch_rollouts(self, step: int, logs: dict[str, float], control: Any) -> None:
        """Rollouts from another engine (vLLM) must come from the policy being trained. TRL
        logs how far the engine's log-probs are from the trained model's on the sampled
        tokens; a large gap means stale weights or a LoRA the engine never applied."""
        gap = logs.get(ROLLOUT_GAP)
        if gap is None or math.isnan(gap):
            return
        g = self.recipe.grpo
        what = (f"the rollout engine's log-probs differ from the trained policy's by {gap:.3f} on average (at most "
                f"{logs.get(ROLLOUT_GAP_MAX, float('nan')):.3f})")
        if gap > g.rollout_gap_warn:
            self._warn("rollouts", f"step {step}: {what}: the rollouts may not come from the policy being trained "
                       "(stale weights after a sync, or the LoRA not applied)")
        self.gap_run = self.gap_run + 1 if gap > g.rollout_gap_stop else 0
        if self.gap_run >= g.rollout_gap_steps and self.stopped is None:
            self.stopped = (f"grpo stopped at step {step}: {what} on {self.gap_run} logged steps in a row (above "
                            f"grpo.rollout_gap_stop {g.rollout_gap_stop:g}), so GRPO was training on another model's "
                            "samples; the checkpoint is kept. Check the vLLM weight sync and the adapter, then re-run")
            control.should_training_stop = True
            control.should_save = True

    def _watch_numbers(self, step: int, logs: dict[str, float], control: Any) -> None:
        """A NaN or infinite loss, gradient norm or reward (a weight that overflows the sum) poisons the weights
        from that step on (a known failure of 16-bit GRPO): stop at once, save nothing more, and keep the last
        good checkpoint."""
        numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        bad = [f"{key} {numbers[key]}" for key in ("loss", "grad_norm", "reward", "reward_std")
               if key in numbers and not math.isfinite(numbers[key])]
        # a layer's own mean is NaN where it scored every completion None (TRL skips those): only inf is bad there
        bad += [f"{key} {v}" for key, v in sorted(numbers.items()) if key.startswith("rewards/") and math.isinf(v)]
        if bad and self.diverged is None:
            self.diverged = (f"grpo stopped at step {step}: {' and '.join(bad)}; nothing from this step on was saved and "
                             "the last good checkpoint is kept (re-running resumes from it). Lower the learning rate, "
                             "check the rewards for inf, or train at float32 (model.dtype)")
            control.should_training_stop = True
            control.should_save = False

    def error_counts(self) -> dict[str, int]:
        """Completions each reward raised on, over the whole training (only those with any)."""
        return {f.__name__: f.errors for f in self.funcs if getattr(f, "errors", 0)}

    def _warn(self, key: str, message: str) -> None:
        if key not in {w.split(":")[0] for w in self.warned}:
            self.warned.append(f"{key}: {message}")
            log.warning(message)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        for func in self.funcs:
            count, seen = getattr(func, "errors", 0), self.errors.get(func.__name__, 0)
            if count > seen:
                self.errors[func.__name__] = count
                if seen == 0 or count >= 2 * seen:  # the first error, then each doubling: counted, not spammed
                    log.warning("step %s: reward %s has raised on %d completions so far (scored None there; the first "
                                "traceback is in the log)", state.global_step, func.__name__, count)
        self._watch_numbers(state.global_step, logs, control)
        if self.diverged:
            return
        self._watch_rollouts(state.global_step, logs, control)
        clipped = logs.get("completions/clipped_ratio")
        if clipped is not None and clipped > self.recipe.grpo.warn_truncated_ratio:
            self._warn("truncated", f"step {state.global_step}: {clipped:.0%} of completions hit max_completion_length "
                       f"({self.max_len}); their rewards are mostly format failures. Raise max_completion_length.")
        if logs.get("frac_reward_zero_std") == 1.0:
            self._warn("flat", f"step {state.global_step}: every group's completions got equal rewards, so GRPO had "
                       "no signal this step (problems too easy or too hard, or a reward that never varies)")
        for name in self.format_names:
            value = logs.get(f"rewards/{name}/mean")
            if value is None or math.isnan(value):
                continue
            self.first.setdefault(name, value)
            self.best[name] = max(value, self.best.get(name, value))
            if state.global_step >= self.recipe.grpo.warn_format_after_steps and self.best[name] <= self.first[name] \
                    and self.best[name] <= 0:
                self._warn(f"format-{name}", f"step {state.global_step}: format reward {name} has not risen above "
                           f"{self.best[name]:g}; check the format (prefill, tags) with `aha rewards explain`")
