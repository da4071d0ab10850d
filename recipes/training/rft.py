"""Rejection-sampling fine-tuning (RFT; also called STaR or expert iteration), the alternative
to GRPO when only answers can be checked: sample ``num_generations`` completions per training
prompt from the current policy at GRPO's own sampling settings, score them with the recipe's
reward layers, keep those that pass, fine-tune the same LoRA on them with TRL's SFTTrainer,
and repeat from the adapter that round trained.

What is kept (``rft.min_reward``): by default the completions the grader passes (the answer
right, in the format's answer tags: the preflight's pass rule); with a number, those whose
weighted total reward is at least it (for rewards with no gold answer). A completion cut at the
length limit is never kept, duplicates are dropped, and at most ``rft.max_per_prompt`` are kept
per prompt, highest total reward first.

Each round lives in ``rft/round-N``: ``kept.json`` (the examples and the round's counts, written
before its fine-tune, so a resumed round trains on the same examples) and ``adapter`` when done.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from aha.eval.backends import prompts_per_batch_for
from aha.eval.files import read_json, write_json
from aha.formats import Format

from ..config.schema import Recipe, RecipeError
from ..config.trl_args import grpo_sampling, rft_sft_args
from .preflight import score_group

log = logging.getLogger("aha")
KEPT_FILE = "kept.json"
RFT_FILE = "rft.json"


def keep(group: dict[str, Any], texts: list[str], min_reward: float | None, max_per_prompt: int) -> list[str]:
    """The completions of one scored group (:func:`score_group`) that RFT trains on.

    >>> g = {"passed": [True, True, False, True], "total": [1.0, 3.0, 5.0, 3.0], "truncated": [False, False, False, True]}
    >>> keep(g, ["a", "b", "c", "d"], None, 2), keep(g, ["a", "b", "c", "d"], 2.0, 2), keep(g, ["b", "b", "c", "d"], None, 2)
    (['b', 'a'], ['c', 'b'], ['b'])
    """
    ok = [i for i, text in enumerate(texts) if not group["truncated"][i]
          and (group["passed"][i] if min_reward is None else group["total"][i] >= min_reward)]
    out: list[str] = []
    for i in sorted(ok, key=lambda i: -group["total"][i]):
        if texts[i] not in out:
            out.append(texts[i])
    return out[:max_per_prompt]


def round_prompts(rows: list[dict[str, Any]], per_round: int | None, index: int) -> list[dict[str, Any]]:
    """Round ``index``'s prompts: the next ``per_round`` of ``rows``, in order, cycled (all: every row).

    >>> [r["id"] for r in round_prompts([{"id": i} for i in range(5)], 3, 1)]
    [3, 4, 0]
    """
    if not per_round:
        return list(rows)
    return [rows[(index * per_round + i) % len(rows)] for i in range(per_round)]


def sample_round(recipe: Recipe, fmt: Format, generator: Any, rows: list[dict[str, Any]], length: int,
                 funcs: list[Any], weights: list[float], index: int) -> dict[str, Any]:
    """Sample, score and keep one round: its examples (prompt, completion) and its counts."""
    sampling = grpo_sampling(recipe, length)
    sampling = dataclasses.replace(sampling, seed=sampling.seed + index)  # each round its own draws, the same on a re-run
    examples, passed, nothing = [], 0, 0
    with prompts_per_batch_for(generator, sampling.n):
        groups = generator.generate([r["prompt"] for r in rows], sampling)
    for row, group in zip(rows, groups):
        texts = [x.text for x in group]
        scored = score_group(funcs, weights, fmt, row, texts, [x.truncated for x in group],
                             [x.num_tokens for x in group])
        kept = keep(scored, texts, recipe.rft.min_reward, recipe.rft.max_per_prompt)
        passed += sum(scored["passed"])
        nothing += not kept
        examples += [{"prompt": row["prompt"], "completion": text} for text in kept]
    completions = sampling.n * len(rows)
    counts = {"round": index + 1, "prompts": len(rows), "completions": completions, "passed": passed,
              "pass_rate": passed / completions if completions else 0.0, "kept": len(examples),
              "prompts_with_nothing_kept": nothing}
    log.info("rft round %d: %d completions for %d prompts, %d pass (%.1f%%); %d prompts with nothing kept; "
             "fine-tuning on %d kept", index + 1, completions, len(rows), passed, 100 * counts["pass_rate"], nothing,
             len(examples))
    return {"examples": examples, "counts": counts}


def run_rft(recipe: Recipe, fmt: Format, backend: Any, rows: list[dict[str, Any]], length: int, funcs: list[Any],
            weights: list[float], start: str | None, out: Path, longest_prompt: int) -> dict[str, Any]:
    """Every round, resumable, from the policy ``start`` (None: the base model); writes ``out/adapter``
    (the last trained round's) and ``out/rft.json``. With ``rft.max_seconds``, no round starts that
    the last round's time says would end past it (the first always runs)."""
    from .trainers import sft_trainer, train_and_save

    adapter, rounds, spent = start, [], 0.0
    for index in range(recipe.rft.rounds):
        folder = out / f"round-{index + 1}"
        done = read_json(folder / KEPT_FILE) if (folder / KEPT_FILE).is_file() else None
        if done and "seconds" in done["counts"]:  # finished before a resume
            rounds.append(done["counts"])
            spent += done["counts"]["seconds"]
            adapter = str(folder / "adapter") if done["examples"] else adapter
            continue
        budget = recipe.rft.max_seconds
        if budget and rounds and spent + rounds[-1]["seconds"] > budget:  # the last round's time: the next one's
            log.info("rft: %.0f s spent; round %d would take about %.0f s more, past the %.0f s budget", spent,
                     index + 1, rounds[-1]["seconds"], budget)
            break
        began = time.monotonic()
        if done is None:  # (a round sampled before a kill trains on the same examples)
            generator = backend.generator(adapter)
            done = sample_round(recipe, fmt, generator, round_prompts(rows, recipe.rft.prompts_per_round, index),
                                length, funcs, weights, index)
            del generator
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / KEPT_FILE, done)
        counts = done["counts"]
        if done["examples"]:
            model, tokenizer, peft_config = backend.training_model(adapter)
            args = rft_sft_args(recipe, longest_prompt + length, folder / "checkpoints")
            trainer = sft_trainer(recipe, model, tokenizer, done["examples"], folder, peft_config=peft_config,
                                  args=args)
            counts["steps"] = train_and_save(trainer, folder)["steps"]
            del model, trainer
            adapter = str(folder / "adapter")
            backend.trained(Path(adapter))
        else:
            log.warning("rft round %d: no completion kept; the policy goes on unchanged", index + 1)
            counts["steps"] = 0
        counts["seconds"] = round(time.monotonic() - began, 1)
        write_json(folder / KEPT_FILE, {**done, "counts": counts})
        spent += counts["seconds"]
        rounds.append(counts)
    if adapter is None:
        raise RecipeError("rft: no round kept a completion, so nothing was fine-tuned; lower rft.min_reward, raise "
                          "grpo.num_generations, or start from a warmup (sft.enabled)")
    if adapter == start:
        log.warning("rft: no round kept a completion; its adapter is the warmup's, unchanged")
    shutil.rmtree(out / "adapter", ignore_errors=True)
    shutil.copytree(adapter, out / "adapter")
    report = {"rounds": rounds, "seconds": round(spent, 1), "budget_seconds": recipe.rft.max_seconds,
              "keep_rule": keep_rule(recipe)}
    write_json(out / RFT_FILE, report)
    return report


def keep_rule(recipe: Recipe) -> str:
    r = recipe.rft
    which = ("the grader passes (answer right, in the format's answer tags)" if r.min_reward is None
             else f"the weighted total reward is at least {r.min_reward:g}")
    return (f"completions {which}, none cut at the length limit, distinct, at most {r.max_per_prompt} per prompt "
            "(highest total reward first)")


def to_markdown(report: dict[str, Any]) -> list[str]:
    """RFT's section of the run report and the model card."""
    lines = [f"Kept: {report['keep_rule']}. {len(report['rounds'])} rounds in {report['seconds']:g} s"
             + (f" (budget {report['budget_seconds']:g} s)." if report.get("budget_seconds") else "."), "",
             "| round | prompts | completions | pass rate | kept | prompts with nothing kept | steps | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        lines.append(f"| {r['round']} | {r['prompts']} | {r['completions']} | {100 * r['pass_rate']:.1f}% | "
                     f"{r['kept']} | {r['prompts_with_nothing_kept']} | {r.get('steps', 0)} | {r['seconds']:g} |")
    return lines
