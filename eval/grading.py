"""One sample's verdicts, and the metrics over many."""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from aha.formats import (
    InputError, answers_equal, answers_match, clean_answer, find_last_boxed, get_format, last_number, parse_number,
)
from aha.rewards import UserCodeError, call_bounded, is_reference, load_function, math_equal

from . import metrics as names
from .stats import bootstrap_interval, wilson_interval

log = logging.getLogger("aha")

GRADERS = ("numeric", "math", "exact")  # or your function by reference: fn(answer, gold) -> bool


def grade(completion: str, gold: str, format: Any = "unsloth", truncated: bool = False,
          grader: str = "numeric") -> dict[str, Any]:
    """Verdicts for one completion.

    - ``format_ok``: the completion follows the format exactly;
    - ``strict``: format_ok and the format's answer equals the gold;
    - ``lenient``: the format's answer, or failing that the last number, equals the gold;
    - ``math_verify``: math-verify finds that same answer equivalent to the gold.

    ``grader`` says what "equals" means: ``numeric`` (GSM8K-style answers) compares values,
    or cleaned text when the gold is not a number; ``math`` (LaTeX answers: MATH, AIME)
    also accepts what math-verify finds equivalent, and falls back on the last ``\\boxed{}``
    before the last number; ``exact`` wants the answer's text, stripped, to be the gold's;
    a reference (``path/to/file.py:fn``) calls your ``fn(answer, gold) -> bool``.

    >>> grade("so $x=\\\\frac{1}{2}$, \\\\boxed{\\\\dfrac12}", "0.5", "boxed", grader="math")["strict"]
    True

    >>> g = grade("17+17=34<end_working_out><SOLUTION>34</SOLUTION>", "34")
    >>> g["strict"], g["lenient"], g["math_verify"], g["format_ok"]
    (True, True, True, True)
    >>> g = grade("I think it is 34.", "34")
    >>> g["strict"], g["lenient"], g["extracted"]
    (False, True, '34')
    """
    if grader not in GRADERS and not is_reference(grader):
        raise InputError(f"unknown grader {grader!r}; known: {', '.join(GRADERS)}, or path/to/file.py:fn")
    fmt = get_format(format)
    text = completion if isinstance(completion, str) else ""
    format_answer = fmt.extract_answer(text)
    format_ok = fmt.check_format(text)
    if grader == "math" and format_answer is None:
        boxed = find_last_boxed(text)
        extracted = clean_answer(boxed) if boxed is not None else last_number(text)
    else:
        extracted = format_answer if format_answer is not None else last_number(text)
    verified = bool(math_equal(gold, extracted)) if extracted is not None else False

    def right(answer: str | None) -> bool:
        if grader == "exact":
            return answer is not None and answer.strip() == str(gold).strip()
        if is_reference(grader):
            return answer is not None and own_verdict(grader, answer, gold)
        if grader == "numeric" or answer is None:
            return answers_match(answer, gold)
        return answers_match(answer, gold) or (verified if answer == extracted else bool(math_equal(gold, answer)))

    return {
        "extracted": extracted,
        "format_ok": format_ok,
        "strict": format_ok and right(format_answer),
        "lenient": right(extracted),
        "math_verify": verified,
        "truncated": bool(truncated),
    }


def own_verdict(grader: str, answer: str, gold: str) -> bool:
    """Your grader's verdict: ``fn(answer, gold)`` must return a bool; anything else, or raising, is one line."""
    try:
        verdict = call_bounded(f"grader {grader}", load_function(grader), answer, gold)
    except UserCodeError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's code: one line naming it, never a silent "wrong"
        raise InputError(f"grader {grader}: raised {type(err).__name__}: {err} on answer {answer[:40]!r}") from None
    if not isinstance(verdict, bool):
        raise InputError(f"grader {grader}: returned {verdict!r} for answer {answer[:40]!r}; a grader returns True or "
                         "False")
    return verdict


def test_grader(problems: list[Any], where: str) -> None:
    """Your grader called once before anything loads, on the first problem's gold given as the answer: one that
    raises, takes the wrong arguments, returns something other than True or False or runs past its time stops
    here, not after the model has generated; one that says False is named in a warning (a gold written unlike
    any answer, a list of accepted answers, may be meant; most often every answer would be graded wrong)."""
    problem = next((p for p in problems if is_reference(p.grader)), None)
    if problem is not None and not own_verdict(problem.grader, problem.answer, problem.answer):
        log.warning("%s: grader %s says the gold %r of %s is wrong when it is the answer: check it grades as you "
                    "mean (every answer that equals the gold would be graded wrong)", where, problem.grader,
                    problem.answer[:40], problem.id)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
    (0.25, 1.0, 0.0)
    """
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(extracted: list[str | None], gold: str) -> bool:
    """maj@k: the most common extracted answer (by value when numeric) equals the gold."""
    keys = []
    for answer in extracted:
        if answer is None:
            continue
        value = parse_number(answer)
        keys.append(str(value) if value is not None else clean_answer(answer))
    if not keys:
        return False
    top = Counter(keys).most_common(1)[0][0]
    return bool(answers_equal(top, gold)) or top == clean_answer(gold)


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics over per-sample rows (one row per problem; ``samples`` lists its n generations)."""
    n = len(samples)
    metrics: dict[str, Any] = {names.PROBLEMS: n}
    if n == 0:
        return metrics
    for key in ("strict", "lenient", "math_verify"):
        hits = sum(1 for s in samples if s["samples"][0][key])
        metrics[names.accuracy(key)] = hits / n
        metrics[names.interval(names.accuracy(key))] = list(wilson_interval(hits, n))
    first = [s["samples"][0] for s in samples]
    metrics[names.FORMAT_COMPLIANCE] = sum(g["format_ok"] for g in first) / n
    metrics[names.TRUNCATION_RATE] = sum(g["truncated"] for g in first) / n
    metrics[names.MEAN_TOKENS] = sum(g["num_tokens"] for g in first) / n
    k = min(len(s["samples"]) for s in samples)
    if k > 1:
        for kk in sorted({1, k}):
            for key in ("strict", "lenient"):
                metrics[names.pass_at(kk, key)] = sum(
                    pass_at_k(len(s["samples"]), sum(g[key] for g in s["samples"]), kk) for s in samples) / n
        for key in ("strict", "lenient"):  # avg@k (pass@1 over k samples): its interval, problems resampled
            rates = [sum(g[key] for g in s["samples"]) / len(s["samples"]) for s in samples]
            metrics[names.interval(names.pass_at(1, key))] = list(bootstrap_interval(rates))
        metrics[names.maj_at(k)] = sum(
            majority_correct([g["extracted"] for g in s["samples"][:k]], s["answer"]) for s in samples) / n
    return metrics
