"""Every length limit a run will meet, checked with the real tokenizer before any weights load
(``aha run`` and ``--dry-run``): each evaluation prompt plus ``eval.max_new_tokens`` against the
engine the run evaluates with (on ``auto``, the one it would pick on a GPU too), and, where that
engine also serves GRPO's rollouts, GRPO's longest kept prompt plus its completion length against
``model.max_seq_length``. A recipe that would stop at its first long prompt, after hours of
evaluation and training, is refused at once with the problem named and the value that would fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aha.formats import Format, InputError

from ..config.schema import Recipe, RecipeError, unsloth_refusal


@dataclass(frozen=True)
class Engine:
    """The generation engine of a run's evaluations, and the longest sequence it holds (None: no
    limit of its own, batched HF generation, bounded only by the model's context)."""

    name: str
    limit: int | None


def evaluation_engine(recipe: Recipe) -> Engine:
    """Which engine the run's evaluations will use, sized as the run sizes it. Unsloth (on
    ``unsloth``, or on ``auto`` where a GPU would pick it) starts its vLLM engine at
    ``model.max_seq_length``; so does the hf backend's vLLM engine (``model.use_vllm``).

    >>> from aha.recipes.config.load import parse_recipe
    >>> evaluation_engine(parse_recipe({"model": {"name": "Qwen/Qwen2.5-0.5B-Instruct", "max_seq_length": 1024}}))
    Engine(name="Unsloth's vLLM engine on a GPU (model.max_seq_length)", limit=1024)
    >>> evaluation_engine(parse_recipe({"model": {"name": "builtin:tiny-qwen3"}}))
    Engine(name='batched HF generation', limit=None)
    """
    m = recipe.model
    if m.backend == "unsloth" or (m.backend == "auto" and unsloth_refusal(m) is None):
        return Engine("Unsloth's vLLM engine on a GPU (model.max_seq_length)", m.max_seq_length)
    if m.use_vllm:
        return Engine("the vLLM engine (model.max_seq_length)", m.max_seq_length)
    return Engine("batched HF generation", None)


def _longest(tokenizer: Any, fmt: Format, problems: list[Any]) -> tuple[int, str]:
    """(tokens, problem id) of the longest prompt, as evaluation and GRPO send it."""
    prompts = [fmt.build_prompt(tokenizer, p.question, p.instruction) for p in problems]
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    i = max(range(len(lengths)), key=lengths.__getitem__)
    return lengths[i], problems[i].id


def length_report(recipe: Recipe, fmt: Format, tokenizer: Any) -> tuple[list[str], list[str]]:
    """(what fits, what does not), one line each: every evaluation task and GRPO's prompts."""
    from ..config.trl_args import completion_length
    from .data import eval_problems, grpo_rows, training_problems

    fits, problems = [], []
    engine = evaluation_engine(recipe)
    new = recipe.eval.max_new_tokens
    if recipe.eval.enabled and engine.limit is not None:
        for i, (key, rows) in enumerate(eval_problems(recipe).items()):
            if not rows:
                continue
            longest, pid = _longest(tokenizer, fmt, rows)
            line = (f"eval.tasks[{i}] {key}: its longest prompt ({pid}) is {longest} tokens, plus eval.max_new_tokens "
                    f"{new} makes {longest + new}")
            if longest + new <= engine.limit:
                fits.append(f"{line} <= {engine.limit} ({engine.name})")
            else:
                problems.append(f"{line}, over the {engine.limit} tokens {engine.name} holds: set model.max_seq_length "
                                f">= {longest + new} or eval.max_new_tokens <= {max(engine.limit - longest, 0)}")
    if recipe.grpo.enabled:
        try:
            rows, longest = grpo_rows(recipe, fmt, tokenizer, training_problems(recipe, "grpo"))
        except (InputError, OSError, ConnectionError) as err:  # hub-only training rows, offline
            fits.append(f"grpo: prompt lengths not checked here ({str(err).splitlines()[0][:120]})")
            return fits, problems
        limit = recipe.model.max_seq_length
        try:
            completion = completion_length(recipe, longest)
        except RecipeError as err:
            problems.append(f"{err}: set model.max_seq_length > {longest} or grpo.prompt_percentile lower")
            return fits, problems
        line = (f"grpo: its longest kept prompt is {longest} tokens, plus max_completion_length {completion} makes "
                f"{longest + completion}")
        if engine.limit is None:  # TRL's own generation: nothing holds the rollouts to max_seq_length
            fits.append(f"{line} (rollouts on TRL's HF generation: no engine limit)")
        elif longest + completion <= limit:
            fits.append(f"{line} <= model.max_seq_length {limit}")
        else:
            problems.append(f"{line}, over model.max_seq_length {limit}: set grpo.max_completion_length <= "
                            f"{max(limit - longest, 1)} (or auto), or model.max_seq_length >= {longest + completion}")
    return fits, problems


def refuse_misfits(recipe: Recipe, fmt: Format, tokenizer: Any) -> None:
    """The first length that does not fit, refused in one line (``--dry-run`` lists them all); nothing to
    check without a tokenizer (one that cannot be had here)."""
    if tokenizer is None:
        return
    _, problems = length_report(recipe, fmt, tokenizer)
    if problems:
        more = f" (and {len(problems) - 1} more: aha run --dry-run lists them)" if len(problems) > 1 else ""
        raise RecipeError(problems[0] + more)
