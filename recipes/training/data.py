"""Training data: problems for the recipe's task, minus every evaluation question, rendered
by the recipe's Format (SFT targets) or turned into prompts (GRPO)."""

from __future__ import annotations

import logging
import random
from typing import Any

from aha.eval.stats import quantile
from aha.eval.tasks import Problem, dapo_training, load_dapo, longest_first, normalize_question
from aha.formats import Format

from ..config.schema import Recipe, RecipeError, find_task
from ..config.trl_args import grpo_seed

log = logging.getLogger("aha")


def eval_problems(recipe: Recipe) -> dict[str, list[Problem]]:
    """Each evaluation task's problems, keyed by a folder-safe name."""
    from aha.eval import load_task

    out: dict[str, list[Problem]] = {}
    for t in recipe.eval.tasks:
        key = t.task if t.task != "arith" else f"arith-l{t.level}"
        if key in out:
            key = f"{key}-{len(out)}"
        problems = load_task(find_task(recipe, t.task), path=t.path, limit=None if t.longest else t.limit, seed=t.seed,
                             level=t.level, n=t.limit or 200)
        out[key] = longest_first(problems, t.limit) if t.longest else problems
    return out


def training_source(recipe: Recipe, stage: str = "grpo") -> tuple[str, str | None]:
    """(task, local file or None) a training stage reads: SFT may draw its worked solutions from
    another task than GRPO's prompts.

    >>> from aha.recipes.config import recipe_from_dict
    >>> r = recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, "data": {"task": "dapo-math"},
    ...                       "sft": {"task": "gsm8k"}})
    >>> training_source(r, "sft"), training_source(r, "grpo")
    (('gsm8k', None), ('dapo-math', None))
    """
    d, sft = recipe.data, recipe.sft
    if stage == "sft" and sft.task and sft.task != d.task:
        return sft.task, sft.path
    return d.task, (sft.path or d.path) if stage == "sft" else d.path


def training_problems(recipe: Recipe, stage: str = "grpo") -> list[Problem]:
    """The training split for a stage. DAPO-Math's training rows never hold its held-out problems
    (``aha.eval.tasks.dapo_training``); any question that also appears in an evaluation task is
    dropped, so evaluation is never contaminated. Your own task's training rows also lose every
    row sharing an id with an evaluation problem of that task, and every reworded copy of an
    evaluation problem (training and evaluation files cut from one data set often hold both)."""
    from aha.eval import load_task

    d = recipe.data
    name, path = training_source(recipe, stage)
    task = find_task(recipe, name)
    problems = load_task(task, path=path, split="train", hub=d.hub, n=d.num_train, level=d.level, seed=d.seed)
    evaluated = [p for ps in eval_problems(recipe).values() for p in ps]
    held = {normalize_question(p.question) for p in evaluated}
    kept = [p for p in problems if normalize_question(p.question) not in held]
    if task.own:
        ids = {p.id.removeprefix(f"{task.name}-") for p in evaluated if p.id.startswith(f"{task.name}-")}
        kept = dapo_training([p for p in kept if p.id.removeprefix(f"{task.name}-train-") not in ids], evaluated,
                             same_numbers=True)
    if len(kept) < len(problems):
        log.info("dropped %d training problems that are also evaluation problems", len(problems) - len(kept))
    if not kept:
        raise RecipeError(f"{stage}: task {name!r}: none of its {len(problems)} training problems is left after removing "
                          f"the {len(evaluated)} evaluation problems (each is one of them, shares an id with one, or "
                          "rewords one): give it training rows that are not evaluation problems")
    return kept


def data_sources(recipe: Recipe) -> list[str]:
    """Where each stage's problems come from, read offline (``--dry-run`` prints it): counts for
    what is generated or shipped, the hub dataset for what only the hub has."""
    from aha.eval.tasks import TASKS

    def where(task: str, path: str | None, hub: bool) -> str:
        if path:
            return f"{task} from {path}"
        if task in recipe.tasks:
            own = find_task(recipe, task)
            rows = own.train_file or (f"{own.file}, all but {own.heldout} held out" if own.heldout else None)
            return f"{task} (yours) from {rows or own.hub[0] + ' ' + str(own.train_hub[2]) + ' (hub)'}"
        if task == "arith":
            return f"arith level {recipe.data.level}, generated ({recipe.data.num_train} problems)"
        spec = TASKS[task]
        if spec.train_file and not hub:
            return f"{task}, shipped ({len(load_dapo(part='train'))} problems; data.hub: true reads {spec.hub[0]})"
        return f"{task} from the hub ({spec.hub[0]}, {spec.hub[1] or 'default'}, train)"

    out = []
    for stage, enabled in (("sft", recipe.sft.enabled), ("grpo", recipe.grpo.enabled)):
        if enabled:
            task, path = training_source(recipe, stage)
            out.append(f"{stage}: {where(task, path, recipe.data.hub)}")
    if recipe.eval.enabled:
        evals = eval_problems(recipe)  # shipped or generated: read here, offline; a hub-only task says so
        out.append("eval: " + ", ".join(f"{name} ({len(problems)} problems)" for name, problems in evals.items()))
    return out


def sft_rows(recipe: Recipe, fmt: Format, tokenizer: Any, problems: list[Problem]) -> list[dict[str, str]]:
    """Prompt/completion pairs: the prompt is exactly what evaluation and GRPO send (chat
    template + prefill); the completion is the worked solution in the format's tags."""
    rows, too_long = [], 0
    for p in problems:
        if not p.solution:
            continue
        prompt = fmt.build_prompt(tokenizer, p.question, p.instruction)
        completion = fmt.render_completion(p.solution, p.answer)
        length = len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"])
        if length > recipe.sft.max_tokens:
            too_long += 1
            continue
        rows.append({"prompt": prompt, "completion": completion})
        if len(rows) == recipe.sft.num_examples:
            break
    if too_long:
        log.info("sft: dropped %d examples longer than %d tokens", too_long, recipe.sft.max_tokens)
    if not rows:
        raise RecipeError("sft: no usable worked solutions (none in the data, or all longer than sft.max_tokens)")
    return rows


def grpo_rows(recipe: Recipe, fmt: Format, tokenizer: Any, problems: list[Problem]) -> tuple[list[dict[str, str]], int]:
    """Prompts for GRPO, those longer than the recipe's percentile dropped; returns the
    rows and the longest kept prompt in tokens."""
    rng = random.Random(grpo_seed(recipe))
    pool = list(problems)
    rng.shuffle(pool)
    pool = pool[: recipe.grpo.num_prompts]
    prompts = [fmt.build_prompt(tokenizer, p.question, p.instruction) for p in pool]
    lengths = [len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in prompts]
    cutoff = quantile(lengths, recipe.grpo.prompt_percentile / 100)
    rows = [{"prompt": x, "question": p.question, "answer": p.answer, "id": p.id, **p.columns}
            for x, p, n in zip(prompts, pool, lengths) if n <= cutoff]
    if len(rows) < len(pool):
        log.info("grpo: dropped %d prompts longer than %g tokens (percentile %g)", len(pool) - len(rows), cutoff,
                 recipe.grpo.prompt_percentile)
    return rows, max(n for n in lengths if n <= cutoff)


def rendered_examples(recipe: Recipe, fmt: Format, tokenizer: Any, count: int = 2) -> list[str]:
    """What each stage's first problems look like as the model sees them (``--dry-run``): the prompt
    as GRPO and evaluation send it and, for SFT, the target the warmup trains on."""
    out = []
    stages = [(s, training_problems(recipe, s)) for s, on in (("sft", recipe.sft.enabled), ("grpo", recipe.grpo.enabled))
              if on]
    if recipe.eval.enabled:
        stages += [(f"eval {name}", problems) for name, problems in eval_problems(recipe).items()]
    for stage, problems in stages:
        shown = [p for p in problems if p.solution][:count] if stage == "sft" else problems[:count]
        for p in shown:
            out.append(f"--- {stage}: {p.id} (gold {p.answer!r}{', grader ' + p.grader if p.grader != 'numeric' else ''})")
            out.append("prompt: " + fmt.build_prompt(tokenizer, p.question, p.instruction))
            if stage == "sft":
                out.append("target: " + fmt.render_completion(p.solution, p.answer))
            if p.columns:
                out.append("columns for your rewards: " + ", ".join(f"{k}={v!r}" for k, v in p.columns.items()))
    return out
