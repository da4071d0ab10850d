"""The evaluation stages (eval-before, eval-after-sft, eval-after): each task greedily,
and after training also k samples per problem at GRPO's own sampling settings. Results
live in the stage's folder (``<stage>/<task>/summary.json``); state.json records only
which evaluations the stage wrote."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aha.eval import Sampling
from aha.eval import metrics as names
from aha.eval.runner import SUMMARY_FILE, EvalJob, evaluate_together

from ..config.schema import Recipe
from ..config.trl_args import sampler
from ..training.data import eval_problems
from .kernel import Context, Stage, adapter_of
from .results import RunResults, read_json_if_there
from .training import SFT, final_adapter, trains

log = logging.getLogger("aha")
SAMPLED_SUFFIX = "-sampled"  # <task>-sampled: <task> sampled at GRPO's settings


def avg_key(key: str, k: int) -> str:
    """The folder of a task's avg@k evaluation (k samples at the task's own settings).

    >>> avg_key("aime24", 16)
    'aime24-avg@16'
    """
    return f"{key}-avg@{k}"


def evaluate_stage(ctx: Context) -> dict[str, Any]:
    """Every task's evaluations (greedy; avg@k; GRPO-sampled), generated together: on vLLM they share one pass."""
    recipe = ctx.recipe
    adapter = ctx.stage.evaluates(ctx.run.dir, recipe)
    generator = ctx.backend.generator(adapter)  # bound to the adapter; meta records which
    meta = {"model": recipe.model.name, "stage": ctx.stage.name, "adapter": adapter}
    greedy = Sampling(max_new_tokens=recipe.eval.max_new_tokens, seed=recipe.seed)
    jobs: dict[str, tuple[EvalJob, int | None]] = {}  # folder -> (its evaluation, k for avg@k, 0 GRPO-sampled)
    for (key, problems), task in zip(eval_problems(recipe).items(), recipe.eval.tasks):
        jobs[key] = (EvalJob(problems, ctx.path(key), ctx.fmt, greedy, meta={**meta, "task": key}), None)
        if task.k > 1:  # small sets: k samples per problem at the task's own settings, for avg@k and its interval
            sampled = Sampling(max_new_tokens=recipe.eval.max_new_tokens, temperature=task.temperature,
                               top_p=task.top_p, n=task.k, seed=recipe.seed)
            jobs[avg_key(key, task.k)] = (EvalJob(problems, ctx.path(avg_key(key, task.k)), ctx.fmt, sampled,
                                                  meta={**meta, "task": key}), task.k)
        if ctx.stage is not EVAL_BEFORE and recipe.eval.sampled_k:  # eval-before never reads GRPO's sampling
            # Training sharpens the sampled policy first: k answers per problem at GRPO's own sampling settings.
            sampled = sampler(recipe, recipe.eval.max_new_tokens, n=recipe.eval.sampled_k, seed=recipe.seed)
            jobs[key + SAMPLED_SUFFIX] = (EvalJob(problems[: recipe.eval.sampled_limit], ctx.path(key + SAMPLED_SUFFIX),
                                                  ctx.fmt, sampled, meta={**meta, "task": key}), 0)
    summaries = evaluate_together(generator, [job for job, _ in jobs.values()])
    for (key, (job, k)), summary in zip(jobs.items(), summaries):
        _log_result(ctx.stage.name, key, job, k, summary["results"])
    return {"evaluations": list(jobs)}


def _log_result(stage: str, key: str, job: EvalJob, k: int | None, r: dict[str, Any]) -> None:
    if k is None:
        log.info("%s %s: format %.1f%%, strict %.1f%%, lenient %.1f%%, truncated %.1f%% (%d problems)", stage, key,
                 100 * r[names.FORMAT_COMPLIANCE], 100 * r[names.accuracy("strict")],
                 100 * r[names.accuracy("lenient")], 100 * r[names.TRUNCATION_RATE], r[names.PROBLEMS])
    elif k:
        low, high = r[names.interval(names.pass_at(1, "strict"))]
        log.info("%s %s: avg@%d strict %.1f%% [%.1f, %.1f], pass@%d %.1f%% (%d problems)", stage,
                 key.rsplit("-avg@", 1)[0], k, 100 * r[names.pass_at(1, "strict")], 100 * low, 100 * high, k,
                 100 * r[names.pass_at(k, "strict")], r[names.PROBLEMS])
    else:
        log.info("%s %s sampled (k=%d, temperature %g): mean pass rate strict %.1f%% (%d problems)", stage,
                 key.removesuffix(SAMPLED_SUFFIX), job.sampling.n, job.sampling.temperature,
                 100 * r[names.pass_at(1, "strict")], r[names.PROBLEMS])


def _read_evaluations(run_dir: Path, record: dict[str, Any] | None, out: RunResults, stage: str) -> None:
    if record is None:
        return
    summaries = {key: read_json_if_there(run_dir / stage / key / SUMMARY_FILE) for key in record.get("evaluations", [])}
    out.evaluations[stage] = {key: s["results"] for key, s in summaries.items() if s and "results" in s}
    for key, s in summaries.items():
        if s and isinstance(s.get("config"), dict):
            out.asked.setdefault(key, {k: s["config"].get(k) for k in ("instruction", "grader") if k in s["config"]})
            out.engines.setdefault(stage, {})[key] = str(s["config"].get("backend", "?"))


def _evaluation(name: str, doc: str, enabled: Any, evaluates: Any, reads: Any = ()) -> Stage:
    return Stage(name, doc, evaluate_stage, writes=(f"{name}/**",), enabled=enabled, reads=reads, evaluates=evaluates,
                 results=lambda run_dir, record, out: _read_evaluations(run_dir, record, out, name))


GRPO_SAMPLING = ("grpo.temperature", "grpo.top_p", "grpo.top_k", "grpo.min_p")  # what preflight.sampler reads


def _evaluation_reads(recipe: Recipe) -> tuple[str, ...]:
    """After training, an evaluation also samples at GRPO's own settings when ``eval.sampled_k`` is set."""
    return ("eval.sampled_k", "eval.sampled_limit") + (GRPO_SAMPLING if recipe.eval.sampled_k else ())


EVAL_BEFORE = _evaluation("eval-before", "evaluate the model as it is (held-out problems, greedy)",
                          lambda r: r.eval.enabled, lambda run_dir, recipe: None)
EVAL_AFTER_SFT = _evaluation("eval-after-sft", "evaluate after the warmup, so GRPO's own share can be measured",
                             lambda r: r.eval.enabled and r.eval.after_sft and r.sft.enabled and r.grpo.enabled,
                             lambda run_dir, recipe: str(adapter_of(run_dir, SFT)), _evaluation_reads)
EVAL_AFTER = _evaluation("eval-after", "evaluate the final adapter", lambda r: r.eval.enabled and trains(r),
                         final_adapter, _evaluation_reads)
