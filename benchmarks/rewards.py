"""Reward throughput on completions built from real GSM8K, measured side by side.

    python benchmarks/rewards.py                 # full run (about a minute)
    python benchmarks/rewards.py --quick         # smoke run, as in CI

Prints completions/s for every layer (one core, ~1 KB completions), then the
math-verify layer (exact fast path for plain numbers) against calling math-verify
alone on the same extracted answers, with the count of differing verdicts.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from aha.eval import load_task
from aha.formats import get_format
from aha.rewards import LAYERS, get_reward
from aha.rewards import mathverify

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "eval" / "data" / "gsm8k" / "test.jsonl"  # shipped, MIT


def load_gsm8k(path: Path, limit: int) -> list[tuple[str, str]]:
    """(worked solution without calculator notes, gold answer) for the first ``limit`` problems."""
    return [(p.solution, p.answer) for p in load_task("gsm8k", path=path, limit=limit)]


def variants(gold: str, rng: random.Random, units: bool = False) -> str:
    """The answer a model might write: right, right but decorated, or wrong.
    With ``units``, some answers carry a unit word ("72 dollars")."""
    value = int(gold.replace(",", "")) if gold.lstrip("-").replace(",", "").isdigit() else None
    choices = [gold, f"${gold}", f"\\boxed{{{gold}}}", f"{gold}.00"]
    if value is not None:
        choices += [f"{value:,}", str(value + 1), str(value * 2), f"\\frac{{{value * 2}}}{{2}}"]
        if units:
            choices += [f"{value} dollars", f"{value + 1} dollars"]
    return rng.choice(choices)


def build_completions(rows: list[tuple[str, str]], fmt_name: str, target_chars: int, seed: int, units: bool = False):
    fmt = get_format(fmt_name)
    rng = random.Random(seed)
    completions, golds = [], []
    for i, (reasoning, gold) in enumerate(rows):
        text = reasoning
        j = i + 1
        while len(text) < target_chars:  # stitch neighbours' solutions to reach ~1 KB
            text += "\n" + rows[j % len(rows)][0]
            j += 1
        completion = fmt.render_completion(text[:target_chars], variants(gold, rng, units))
        if rng.random() < 0.15:  # some broken formats, as early in training
            completion = completion.replace(fmt.generated_tags[0], "", 1) if fmt.generated_tags else completion[:-5]
        completions.append(completion)
        golds.append(gold)
    return completions, golds


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def math_verify_alone(gold: str, guess: str | None) -> bool:
    """What a recipe does without our layer: parse both with math-verify and verify."""
    from math_verify import parse, verify

    if guess is None:
        return False
    return bool(verify(parse("\\boxed{" + gold + "}"), parse("\\boxed{" + guess + "}")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K jsonl (question, answer)")
    parser.add_argument("--n", type=int, default=1319, help="completions per layer")
    parser.add_argument("--chars", type=int, default=1000, help="reasoning length per completion")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.n = 200
    if not args.data.is_file():
        print(f"benchmark: no GSM8K file at {args.data} (pass --data)", file=sys.stderr)
        return 2
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the targets say

    rows = load_gsm8k(args.data, args.n)
    print(f"{len(rows)} real GSM8K test problems from {args.data.name}, ~{args.chars}-char reasoning, one CPU core\n")
    print(f"{'layer':<22} {'format':<8} {'mode':<9} {'completions/s':>14}")
    for fmt_name in ("unsloth", "xml"):
        completions, golds = build_completions(rows, fmt_name, args.chars, args.seed)
        for name in LAYERS:
            for mode in ("default", "faithful"):
                if name == "truncation_penalty":  # needs token ids and a length limit: nothing to time
                    continue
                if mode == "faithful" and name in ("check_math_verify", "length_penalty", "repetition_penalty"):
                    continue
                if name == "check_dapo_answer":
                    continue
                fn = get_reward(name, format=fmt_name, mode=mode)
                mathverify._parse.cache_clear()
                seconds = best_of(1 if args.quick else 3, lambda: fn(completions, answer=golds))
                print(f"{name:<22} {fmt_name:<8} {mode:<9} {len(completions) / seconds:>14,.0f}")

    # The answer layer against math-verify alone: same extracted answers, same verdicts?
    differ_total = 0
    for label, units in (("GSM8K-style answers ($, commas, \\boxed, .00, integer fractions)", False),
                         ("the same plus unit words ('72 dollars'), left to math-verify", True)):
        differ_total += compare_with_math_verify(rows, args, label, units)
    return 0 if differ_total == 0 else 1


def compare_with_math_verify(rows, args, label: str, units: bool) -> int:
    completions, golds = build_completions(rows, "unsloth", args.chars, args.seed, units)
    fmt = get_format("unsloth")
    guesses = [fmt.extract_answer(c) for c in completions]
    layer = get_reward("check_math_verify", format="unsloth")
    for g, p in zip(golds[:20], guesses[:20]):  # import and warm math-verify before timing either side
        math_verify_alone(g, p)

    def ours_uncached():
        mathverify._parse.cache_clear()  # no help from repeats: every parse is paid
        return layer(completions, answer=golds)

    repeats = 1 if args.quick else 3
    alone_s = best_of(repeats, lambda: [math_verify_alone(g, p) for g, p in zip(golds, guesses)])
    ours_s = best_of(repeats, ours_uncached)
    ours = ours_uncached()
    alone = [math_verify_alone(g, p) for g, p in zip(golds, guesses)]
    differ = sum((o == 1.0) != a for o, a in zip(ours, alone))
    exact = sum(1 for g, p in zip(golds, guesses)
                if p and mathverify._fast_verdict(mathverify._prepare(g) or "", mathverify._prepare(p) or "") is not None)
    print(f"\nanswer layer vs math-verify alone, {len(completions)} completions: {label}")
    print(f"  {exact} decided exactly without the parser, {len(completions) - exact} by math-verify")
    print(f"  check_math_verify (ours)   {len(completions) / ours_s:>10,.0f} completions/s")
    print(f"  math-verify parse+verify   {len(completions) / alone_s:>10,.0f} completions/s")
    print(f"  speed-up {alone_s / ours_s:.1f}x; verdicts that differ: {differ} of {len(completions)}; "
          f"correct by math-verify: {sum(alone) / len(alone):.3f}")
    return differ


if __name__ == "__main__":
    sys.exit(main())
