"""Why a completion got the rewards it got: one row per layer, with the reason."""

from __future__ import annotations

from typing import Any

from aha.formats import Format, get_format, parse_number

from . import faithful as published
from .core import check_mode, gold_for
from .dapo import extract_dapo_answer, normalize_final_answer
from .layers import LAYERS
from .references import is_reference
from .registry import PUBLISHED_RECIPES, get_reward


def diagnose_format(fmt: Format, text: str, level: str = "strict") -> str:
    """Why ``text`` is off-format at ``level`` ("ok" if it is not): :meth:`Format.format_violation`."""
    return fmt.format_violation(text, level) or "ok"


def _why_faithful_unsloth(layer: str, fmt: Format, text: str, gold: str | None, eos: str) -> str:
    group = published.unsloth_answer_match(text, fmt, eos)
    if group is None:
        end = text.rfind(fmt.answer_end)
        tail = text[end + len(fmt.answer_end) :].strip() if end >= 0 else ""
        hint = f"; text after {fmt.answer_end}: {tail[:30]!r} (is it the eos token? pass --eos-token)" if tail else ""
        return f"published answer regex does not match{hint}"
    return "published answer regex matches" if layer == "format_exact" else f"read {group!r} verbatim, gold {gold!r}"


def _why(layer: str, fmt: Format, text: str, gold: str | None, faithful: bool, eos: str = "") -> str:
    if faithful and layer in ("format_exact", "check_answer_numeric") and fmt.answer_style == "tags":
        return _why_faithful_unsloth(layer, fmt, text, gold, eos)
    if layer in ("format_exact", "xml_strict_format", "xml_soft_format"):
        if faithful and layer != "format_exact":
            return "published regex (no DOTALL: multi-line reasoning fails)" if "\n" in text else "published regex"
        return diagnose_format(fmt, text, {"xml_strict_format": "template", "xml_soft_format": "soft"}.get(layer, "strict"))
    if layer in ("format_approximate", "xml_count"):
        tags = fmt.generated_tags if not faithful or layer == "xml_count" else (fmt.reasoning_end, fmt.answer_start, fmt.answer_end)
        return ", ".join(f"{t} x{text.count(t)}" for t in tags)
    if layer == "check_dapo_answer":
        guess = extract_dapo_answer(text)
        return "no 'Answer:' line in the last 300 characters" if guess is None else (
            f"read {normalize_final_answer(guess)!r}, gold {normalize_final_answer(gold or '')!r}")
    guess = fmt.extract_answer(text)
    if guess is None:
        return f"no answer found ({diagnose_format(fmt, text)})"
    value = parse_number(guess)
    shown = f"{guess!r}" + (f" = {value}" if value is not None and str(value) != guess else "")
    return f"read {shown}, gold {gold!r}" if gold is not None else f"read {shown}, no gold answer"


def applicable_layers(fmt: Format, faithful: bool) -> list[str]:
    """The layers that make sense for a format (the DAPO grader only for ``dapo``)."""
    names = []
    for name in LAYERS:
        if name in ("length_penalty", "truncation_penalty", "repetition_penalty"):
            continue
        if name == "check_dapo_answer" and fmt.answer_style != "answer_line":
            continue
        if faithful and fmt.answer_style != "tags" and name in ("format_exact", "format_approximate", "check_answer_numeric", "check_number"):
            continue
        names.append(name)
    return names


def recipe_layers(fmt: Format) -> list[str]:
    """The layers a recipe for this format uses: the published list where there is one."""
    if fmt.name in PUBLISHED_RECIPES:
        return PUBLISHED_RECIPES[fmt.name][1] + ["check_math_verify"]
    if fmt.answer_style == "answer_line":
        return ["check_dapo_answer", "check_math_verify"]
    return ["format_exact", "format_approximate", "check_answer_exact", "check_math_verify"]


def explain(text: str, answer: Any = None, format: Any = "unsloth", mode: str = "default",
            eos_token: str = "", all_layers: bool = False, rewards: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Score ``text`` with the format's recipe layers (``all_layers``: every layer
    that applies), then with ``rewards`` (layer names, your functions by reference, or callables),
    each as GRPO calls it; rows of ``{layer, score, why}``.

    >>> rows = explain("17+17<end_working_out><SOLUTION>34</SOLUTION>", answer="34")
    >>> [(r["layer"], r["score"]) for r in rows]
    [('format_exact', 3.0), ('format_approximate', 1.5), ('check_answer_numeric', 5.0), ('check_number', 3.5), ('check_math_verify', 1.0)]
    """
    faithful = check_mode(mode) == "faithful"
    fmt = get_format(format)
    gold = gold_for([answer], 0, faithful) if answer is not None else None
    rows = []
    for name in applicable_layers(fmt, faithful) if all_layers else recipe_layers(fmt):
        layer = LAYERS[name]
        kwargs: dict[str, Any] = {"format": fmt, "mode": mode, "answer": [answer]}
        if eos_token and name in ("format_exact", "check_answer_numeric"):
            kwargs["eos_token"] = eos_token
        score = layer([text], **kwargs)[0]
        rows.append({"layer": name, "score": score, "why": _why(name, fmt, text, gold, faithful, eos_token)})
    for reward in rewards:
        fn = get_reward(reward, format=fmt, mode=mode)
        score = fn([text], prompts=[""], answer=[answer])[0]
        own = is_reference(reward) or callable(reward)
        why = (f"your function ({reward if isinstance(reward, str) else 'passed in Python'})" if own else
               _why(fn.__name__, fmt, text, gold, faithful, eos_token) if fn.__name__ in LAYERS else "reward model score")
        if getattr(fn, "errors", 0):
            why += "; it raised on this completion (scored None)"
        rows.append({"layer": fn.__name__, "score": score, "why": why})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of :func:`explain` rows, with the total."""
    width = max(len(r["layer"]) for r in rows)
    lines = [f"{'layer':<{width}}  {'score':>7}  why", f"{'-' * width}  {'-' * 7}  {'-' * 40}"]
    for r in rows:
        score = "   none" if r["score"] is None else f"{r['score']:7.3f}"
        lines.append(f"{r['layer']:<{width}}  {score}  {r['why']}")
    total = sum(r["score"] for r in rows if r["score"] is not None)
    lines.append(f"{'sum':<{width}}  {total:7.3f}  (of the rows above, unweighted)")
    return "\n".join(lines)
