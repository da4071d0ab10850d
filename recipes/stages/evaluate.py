"""The evaluation stages (eval-before, eval-after-sft, eval-after): each task greedily,
and after training also k samples per problem at GRPO's own sampling settings. Results
live in the stage's folder (``<stage>/<task>/summary.json``); state.json records only
which evaluations the stage wrote."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from aha.eval import Sampling, evaluate
from aha.eval import metrics as names
from aha.eval.backends import prompts_per_batch_for

from ..training.data import eval_problems
from .preflight import grpo_sampling
from .runner import Context
from .table import EVAL_BEFORE

log = logging.getLogger("aha")
SAMPLED_SUFFIX = "-sampled"  # <task>-sampled: <task> sampled at GRPO's settings


def avg_key(key: str, k: int) -> str:
    """The folder of a task's avg@k evaluation (k samples at the task's own settings).

    >>> avg_key("aime24", 16)
    'aime24-avg@16'
    """
    return f"{key}-avg@{k}"


def evaluate_stage(ctx: Context) -> dict[str, Any]:
    recipe = ctx.recipe
    adapter = ctx.stage.evaluates(ctx.run.dir, recipe)
    generator = ctx.backend.generator(adapter)  # bound to the adapter; meta records which
    meta = {"model": recipe.model.name, "stage": ctx.stage.name, "adapter": adapter}
    greedy = Sampling(max_new_tokens=recipe.eval.max_new_tokens, seed=recipe.seed)
    written = []
    tasks = {key: task for key, task in zip(eval_problems(recipe), recipe.eval.tasks)}
    for key, problems in eval_problems(recipe).items():
        r = evaluate(generator, problems, ctx.path(key), ctx.fmt, greedy, meta={**meta, "task": key})["results"]
        log.info("%s %s: format %.1f%%, strict %.1f%%, lenient %.1f%%, truncated %.1f%% (%d problems)", ctx.stage.name,
                 key, 100 * r[names.FORMAT_COMPLIANCE], 100 * r[names.accuracy("strict")],
                 100 * r[names.accuracy("lenient")], 100 * r[names.TRUNCATION_RATE], r[names.PROBLEMS])
        written.append(key)
        task = tasks[key]
        if task.k > 1:  # small sets: k samples per problem at the task's own settings, for avg@k and its interval
            sampled = Sampling(max_new_tokens=recipe.eval.max_new_tokens, temperature=task.temperature,
                               top_p=task.top_p, n=task.k, seed=recipe.seed)
            with prompts_per_batch_for(generator, task.k):
                r = evaluate(generator, problems, ctx.path(avg_key(key, task.k)), ctx.fmt, sampled,
                             meta={**meta, "task": key})["results"]
            low, high = r[names.interval(names.pass_at(1, "strict"))]
            log.info("%s %s: avg@%d strict %.1f%% [%.1f, %.1f], pass@%d %.1f%% (%d problems)", ctx.stage.name, key,
                     task.k, 100 * r[names.pass_at(1, "strict")], 100 * low, 100 * high, task.k,
                     100 * r[names.pass_at(task.k, "strict")], r[names.PROBLEMS])
            written.append(avg_key(key, task.k))
        if recipe.eval.sampled_k and ctx.stage is not EVAL_BEFORE:
            # Training sharpens the sampled policy first: k answers per problem at GRPO's own sampling settings.
            k = recipe.eval.sampled_k
            sampled = replace(grpo_sampling(recipe, recipe.eval.max_new_tokens), n=k, seed=recipe.seed)
            with prompts_per_batch_for(generator, k):
                r = evaluate(generator, problems[: recipe.eval.sampled_limit], ctx.path(key + SAMPLED_SUFFIX),
                             ctx.fmt, sampled, meta={**meta, "task": key})["results"]
            log.info("%s %s sampled (k=%d, temperature %g): mean pass rate strict %.1f%% (%d problems)",
                     ctx.stage.name, key, k, sampled.temperature, 100 * r[names.pass_at(1, "strict")],
                     r[names.PROBLEMS])
            written.append(key + SAMPLED_SUFFIX)
    return {"evaluations": written}
