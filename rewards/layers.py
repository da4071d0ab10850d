"""The reward layers: TRL reward functions ``fn(completions, **columns) -> list[float | None]``.

Every function takes the same keyword options: ``format`` (a name or
:class:`~aha.formats.Format`), ``mode`` (``"default"`` or ``"faithful"``) and
``answer_column`` (the dataset column holding the gold answer). TRL passes the
dataset's columns as keyword arguments, so the gold answer arrives by itself.

Scores follow the published recipes (docs/SOURCES.md: the Unsloth Qwen3 GRPO notebook and
the GSM8K XML recipe), so weights tuned
for them carry over; ``mode="default"`` fixes how they read text (multi-line
reasoning, end-of-sequence tokens, ``$`` and thousands commas, ``\\boxed{}`` inside
the answer tag) and ``mode="faithful"`` reproduces them exactly, bugs included.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from aha.formats import Format, InputError, answers_equal, answers_match, get_format, parse_number

from . import faithful as published
from .core import KINDS, as_batch, check_mode, completion_text, score_batch
from .dapo import extract_dapo_answer, normalize_final_answer
from .mathverify import math_equal

FormatSpec = str | Format
LayerFn = Callable[..., "list[float | None]"]


class Layer:
    """A reward layer: its default implementation and, where a published recipe defines
    the layer differently, the faithful one, and the ``kind`` it declares: ``format``
    (the layout), ``answer`` (correctness) or ``penalty`` (length, repetition). The mode is
    chosen once: :func:`get_reward` binds ``for_mode(mode)``; calling the layer itself
    picks by its ``mode`` keyword.

    >>> xml_strict_format.for_mode("faithful") is not xml_strict_format.for_mode("default")
    True
    >>> xml_strict_format.kind, check_number.kind, length_penalty.kind
    ('format', 'answer', 'penalty')
    """

    def __init__(self, default: LayerFn, faithful: LayerFn | None = None, *, kind: str):
        if kind not in KINDS:
            raise ValueError(f"layer {default.__name__}: kind must be one of {KINDS}, not {kind!r}")
        self.default, self.faithful, self.kind = default, faithful or default, kind
        self.__name__ = self.__qualname__ = default.__name__
        self.__doc__ = default.__doc__
        self.__module__ = default.__module__
        params = {**inspect.signature(self.faithful).parameters, **inspect.signature(default).parameters}
        keyword = [p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        mode = inspect.Parameter("mode", inspect.Parameter.KEYWORD_ONLY, default="default")
        positional = [p for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        rest = [p for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
        self.__signature__ = inspect.Signature(positional + keyword + [mode] + rest)

    def for_mode(self, mode: str) -> LayerFn:
        return self.faithful if check_mode(mode) == "faithful" else self.default

    def __call__(self, completions: Any = None, *, mode: str = "default", **kwargs: Any) -> list[float | None]:
        return self.for_mode(mode)(completions, **kwargs)

    def __reduce__(self) -> str:
        return self.__name__  # pickles as the module-level name it is bound to


def layer(kind: str, faithful: LayerFn | None = None) -> Callable[[LayerFn], Layer]:
    """Declare a layer of ``kind``: the decorated function is the default mode, ``faithful`` the published one."""
    return lambda default: Layer(default, faithful, kind=kind)


def _tags_format(format: FormatSpec, what: str) -> Format:
    fmt = get_format(format)
    if fmt.answer_style != "tags":
        raise InputError(f"{what} needs a format with answer tags; {fmt.name!r} writes its answer as {fmt.answer_style}")
    return fmt


# ---------------------------------------------------------------------------------
# Format layers
# ---------------------------------------------------------------------------------
def _published_format_exact(completions: Any, *, format: FormatSpec = "unsloth", eos_token: str = "",
                            **columns: Any) -> list[float | None]:
    fmt = _tags_format(format, "faithful format_exact")
    return score_batch(completions, lambda t: published.match_format_exactly(t, fmt, eos_token))


@layer("format", faithful=_published_format_exact)
def format_exact(completions: Any, *, format: FormatSpec = "unsloth", eos_token: str = "",
                 **columns: Any) -> list[float | None]:
    """+3.0 when the completion follows the format exactly, else 0.

    Default mode: every tag once, in order, reasoning may span lines, only whitespace
    or end-of-sequence tokens after the answer. Faithful mode: the Unsloth recipe's
    answer regex (``eos_token`` is the tokenizer's, which the regex allows).

    >>> format_exact(["Step 1\\nStep 2<end_working_out><SOLUTION>34</SOLUTION><|endoftext|>",
    ...               "34"])
    [3.0, 0.0]
    """
    fmt = get_format(format)
    return score_batch(completions, lambda t: 3.0 if fmt.check_format(t) else 0.0)


def _published_format_approximate(completions: Any, *, format: FormatSpec = "unsloth",
                                  **columns: Any) -> list[float | None]:
    fmt = _tags_format(format, "faithful format_approximate")
    return score_batch(completions, lambda t: published.match_format_approximately(t, fmt))


@layer("format", faithful=_published_format_approximate)
def format_approximate(completions: Any, *, format: FormatSpec = "unsloth", **columns: Any) -> list[float | None]:
    """For each tag the completion must write: +0.5 if it occurs exactly once, else -1.0.

    The Unsloth recipe counts its three generated tags (range -3 .. +1.5); tags the
    prompt already ends with (the prefill) are not counted.

    >>> format_approximate(["work<end_working_out><SOLUTION>7</SOLUTION>", "<SOLUTION>7"])
    [1.5, -1.5]
    """
    tags = get_format(format).generated_tags
    return score_batch(completions, lambda t: sum(0.5 if t.count(tag) == 1 else -1.0 for tag in tags))


def _tags_in_context(fmt: Format) -> list[str]:
    """Each generated tag with the newlines the template writes around it (the last
    tag without its trailing newline), as the XML recipe counts them."""
    out = []
    for tag in fmt.generated_tags:
        at = fmt.template.find(tag)
        left = "\n" if at > 0 and fmt.template[at - 1] == "\n" else ""
        after = at + len(tag)
        right = "\n" if tag != fmt.generated_tags[-1] and fmt.template[after : after + 1] == "\n" else ""
        out.append(left + tag + right)
    return out


def _published_xml_count(completions: Any, **columns: Any) -> list[float | None]:
    return score_batch(completions, published.xmlcount_reward_func)


@layer("format", faithful=_published_xml_count)
def xml_count(completions: Any, *, format: FormatSpec = "xml", **columns: Any) -> list[float | None]:
    """+0.125 per tag (with its newlines) that occurs exactly once, minus 0.001 per
    character of text after the closing answer tag (at most 0.5 in all).

    Default mode does not count trailing whitespace or end-of-sequence tokens as
    trailing text. Faithful mode is the XML recipe's count, value for value.

    >>> xml_count(["<reasoning>\\nthink\\n</reasoning>\\n<answer>\\n4\\n</answer>\\n<|im_end|>"])
    [0.5]
    """
    fmt = get_format(format)
    contexts = _tags_in_context(fmt)
    closing = fmt.answer_end or (fmt.generated_tags[-1] if fmt.generated_tags else "")

    def score(text: str) -> float:
        total = sum(0.125 for tag in contexts if text.count(tag) == 1)
        cut = text.rfind(closing) if closing else -1
        if cut >= 0:
            total -= 0.001 * len(fmt.strip_tail(text[cut + len(closing) :]))
        return total

    return score_batch(completions, score)


def _published_xml_strict_format(completions: Any, **columns: Any) -> list[float | None]:
    return score_batch(completions, published.strict_format_reward_func)


@layer("format", faithful=_published_xml_strict_format)
def xml_strict_format(completions: Any, *, format: FormatSpec = "xml", **columns: Any) -> list[float | None]:
    """+0.5 when the completion has exactly the format's layout, newlines included.

    Faithful mode is the XML recipe's regex without DOTALL: multi-line reasoning
    scores 0 (the published bug behind "format reward always 0").

    >>> text = "<reasoning>\\nline 1\\nline 2\\n</reasoning>\\n<answer>\\n4\\n</answer>\\n"
    >>> xml_strict_format([text]), xml_strict_format([text], mode="faithful")
    ([0.5], [0.0])
    """
    fmt = get_format(format)
    return score_batch(completions, lambda t: 0.5 if fmt.matches_template(t) else 0.0)


def _published_xml_soft_format(completions: Any, **columns: Any) -> list[float | None]:
    return score_batch(completions, published.soft_format_reward_func)


@layer("format", faithful=_published_xml_soft_format)
def xml_soft_format(completions: Any, *, format: FormatSpec = "xml", **columns: Any) -> list[float | None]:
    """+0.5 when the completion starts with the reasoning block and the answer block
    follows it (any whitespace, any line breaks).

    >>> xml_soft_format(["<reasoning>a\\nb</reasoning> <answer>4</answer>"]), \\
    ...     xml_soft_format(["<reasoning>a\\nb</reasoning> <answer>4</answer>"], mode="faithful")
    ([0.5], [0.0])
    """
    fmt = get_format(format)
    return score_batch(completions, lambda t: 0.5 if fmt.format_violation(t, "soft") is None else 0.0)


# ---------------------------------------------------------------------------------
# Answer layers
# ---------------------------------------------------------------------------------
def _ratio_score(guess: Fraction, gold: Fraction) -> float:
    if gold == 0:
        return -2.5
    ratio = guess / gold
    if Fraction(9, 10) <= ratio <= Fraction(11, 10):
        return 2.0
    if Fraction(8, 10) <= ratio <= Fraction(12, 10):
        return 1.5
    return -2.5


def _published_check_answer(completions: Any, *, format: FormatSpec = "unsloth", answer_column: str = "answer",
                            eos_token: str = "", **columns: Any) -> list[float | None]:
    fmt = _tags_format(format, "faithful check_answer_numeric")
    return score_batch(completions, lambda t, g: published.check_answer(t, g, fmt, eos_token),
                       columns.get(answer_column), True, True)


@layer("answer", faithful=_published_check_answer)
def check_answer_numeric(completions: Any, *, format: FormatSpec = "unsloth", answer_column: str = "answer",
                         eos_token: str = "", **columns: Any) -> list[float | None]:
    """The Unsloth recipe's graded answer score: right +5.0, right but for spaces
    +3.5, within 10% +2.0, within 20% +1.5, otherwise -2.5; no answer -2.0; an answer
    that is not a number -4.5. ``None`` when the gold is missing (or, in default
    mode, not a number).

    Default mode reads the answer with the format (``$``, thousands commas,
    ``\\boxed{}`` are fine) and compares exact values.

    >>> done = "<end_working_out><SOLUTION>{}</SOLUTION>"
    >>> check_answer_numeric([done.format(a) for a in ["$1,000", "1050", "abc"]] + ["none"],
    ...                      answer=["1000"] * 4)
    [5.0, 2.0, -4.5, -2.0]
    """
    fmt = get_format(format)

    def score(text: str, gold: str) -> float | None:
        gold_value = parse_number(gold)
        if gold_value is None:
            return None
        guess = fmt.extract_answer(text)
        if guess is None:
            return -2.0
        value = parse_number(guess)
        if value is None:
            return -4.5
        return 5.0 if value == gold_value else _ratio_score(value, gold_value)

    return score_batch(completions, score, columns.get(answer_column), True)


def _published_check_number(completions: Any, *, format: FormatSpec = "unsloth", answer_column: str = "answer",
                            **columns: Any) -> list[float | None]:
    fmt = _tags_format(format, "faithful check_number")
    return score_batch(completions, lambda t, g: published.check_numbers(t, g, fmt), columns.get(answer_column),
                       True, True)


@layer("answer", faithful=_published_check_number)
def check_number(completions: Any, *, format: FormatSpec = "unsloth", answer_column: str = "answer",
                 **columns: Any) -> list[float | None]:
    """The number in the answer equals the gold: +3.5, else -1.5; no number -2.5.

    Faithful mode takes the first number after the opening answer tag (so ``3/4``
    reads as 3); default mode reads the whole answer first (fractions, percents).

    >>> check_number(["<SOLUTION>3/4</SOLUTION>"], answer=["0.75"]), \\
    ...     check_number(["<SOLUTION>3/4</SOLUTION>"], answer=["0.75"], mode="faithful")
    ([3.5], [-1.5])
    """
    fmt = get_format(format)

    def score(text: str, gold: str) -> float | None:
        gold_value = parse_number(gold)
        if gold_value is None:
            return None
        answer = fmt.extract_answer(text)
        value = parse_number(answer) if answer is not None else None
        if value is None and answer is not None:
            first = re.search(r"-?\d[\d,]*(?:\.\d+)?", answer)
            value = parse_number(first.group(0)) if first else None
        if value is None:
            return -2.5
        return 3.5 if value == gold_value else -1.5

    return score_batch(completions, score, columns.get(answer_column), True)


def _published_check_integer(completions: Any, **columns: Any) -> list[float | None]:
    return score_batch(completions, published.int_reward_func)


@layer("answer", faithful=_published_check_integer)
def check_integer(completions: Any, *, format: FormatSpec = "xml", **columns: Any) -> list[float | None]:
    """+0.5 when the answer is a whole number.

    Faithful mode: the XML recipe's ``isdigit()`` on the text after ``<answer>``
    (so ``-3`` and ``1,000`` get 0).

    >>> check_integer(["<answer>\\n1,000\\n</answer>"]), check_integer(["<answer>\\n1,000\\n</answer>"], mode="faithful")
    ([0.5], [0.0])
    """
    fmt = get_format(format)

    def score(text: str) -> float:
        value = parse_number(fmt.extract_answer(text))
        return 0.5 if value is not None and value.denominator == 1 else 0.0

    return score_batch(completions, score)


def _published_check_answer_exact(completions: Any, *, answer_column: str = "answer",
                                  **columns: Any) -> list[float | None]:
    return score_batch(completions, published.correctness_reward_func, columns.get(answer_column), True, True)


@layer("answer", faithful=_published_check_answer_exact)
def check_answer_exact(completions: Any, *, format: FormatSpec = "xml", answer_column: str = "answer",
                       **columns: Any) -> list[float | None]:
    """+2.0 when the answer equals the gold, else 0 (the XML recipe's correctness).

    Faithful mode compares strings; default mode compares values when the gold is a
    number (``$1,000`` equals ``1000``) and cleaned strings otherwise.

    >>> check_answer_exact(["<answer>\\n$1,000\\n</answer>"], answer=["1000"]), \\
    ...     check_answer_exact(["<answer>\\n$1,000\\n</answer>"], answer=["1000"], mode="faithful")
    ([2.0], [0.0])
    """
    fmt = get_format(format)

    def score(text: str, gold: str) -> float:
        return 2.0 if answers_match(fmt.extract_answer(text), gold) else 0.0

    return score_batch(completions, score, columns.get(answer_column), True)


@layer("answer")  # no published variant: both modes grade the same way
def check_math_verify(completions: Any, *, format: FormatSpec = "unsloth", answer_column: str = "answer",
                      correct: float = 1.0, wrong: float = 0.0, **columns: Any) -> list[float | None]:
    """``correct`` when math-verify finds the answer equivalent to the gold
    (fractions, ``\\boxed``, commas, percents), else ``wrong``; ``None`` when the gold
    cannot be parsed. Thread-safe, bounded time; plain numbers skip the parser.

    >>> check_math_verify(["<SOLUTION>\\\\frac{1}{2}</SOLUTION>", "<SOLUTION>0.4</SOLUTION>"],
    ...                   answer=["0.5", "0.5"])
    [1.0, 0.0]
    """
    fmt = get_format(format)

    def score(text: str, gold: str) -> float | None:
        guess = fmt.extract_answer(text)
        verdict = math_equal(gold, guess) if guess is not None else (False if math_equal(gold, gold) else None)
        return None if verdict is None else (correct if verdict else wrong)

    return score_batch(completions, score, columns.get(answer_column), True)


def _published_check_dapo_answer(completions: Any, *, answer_column: str = "answer",
                                 **columns: Any) -> list[float | None]:
    return score_batch(completions, published.dapo_verl_score, columns.get(answer_column), True, True)


@layer("answer", faithful=_published_check_dapo_answer)
def check_dapo_answer(completions: Any, *, format: FormatSpec = "dapo", answer_column: str = "answer",
                      **columns: Any) -> list[float | None]:
    """DAPO grading: +1.0 when the last ``Answer:`` line (last 300 characters)
    matches the gold, else -1.0.

    Faithful mode is verl's rule value for value (Minerva normalisation, string
    equality; :func:`aha.rewards.faithful.dapo_verl_score`). Default mode normalises
    with aha's more forgiving reader and also accepts equal numeric values (``0.50``
    for ``1/2``).

    >>> check_dapo_answer(["So x = 34.\\nAnswer: 34", "Answer: \\\\boxed{35}", "no answer"],
    ...                   answer=["34"] * 3)
    [1.0, -1.0, -1.0]
    >>> check_dapo_answer(["Answer: 10\\\\%"], answer=["10"]), \\
    ...     check_dapo_answer(["Answer: 10\\\\%"], answer=["10"], mode="faithful")
    ([1.0], [-1.0])
    """
    def score(text: str, gold: str) -> float:
        guess = extract_dapo_answer(text)
        if guess is None:
            return -1.0
        norm_guess, norm_gold = normalize_final_answer(guess), normalize_final_answer(gold)
        if norm_guess == norm_gold and norm_gold:
            return 1.0
        if answers_equal(norm_guess, norm_gold):
            return 1.0
        return -1.0

    return score_batch(completions, score, columns.get(answer_column), True)


# ---------------------------------------------------------------------------------
# Optional penalties. Where TRL ships the same rule (trl.rewards), its function computes
# it; ours adds only what TRL's does not do, named in each docstring.
# ---------------------------------------------------------------------------------
def _trl_rewards() -> Any:
    try:
        import trl.rewards
    except ImportError:
        raise InputError("this penalty uses TRL's reward functions: pip install 'aha-recipes[train]'") from None
    return trl.rewards


@layer("penalty")
def length_penalty(completions: Any, completion_ids: Any = None, *, max_length: int = 1024,
                   scale: float = 1.0, **columns: Any) -> list[float | None]:
    """0 up to ``max_length``, then falling linearly to ``-scale`` at twice that.

    This is TRL's soft overlong punishment (DAPO, Eq. 13) with L_max = 2 x
    ``max_length`` and L_cache = ``max_length``, scaled by ``scale``. What ours adds:
    without TRL's ``completion_ids`` it counts characters, so it also scores text
    from the preflight and ``aha rewards explain``.

    >>> length_penalty(["a" * 10, "a" * 15, "a" * 40], max_length=10)
    [0.0, -0.5, -1.0]
    """
    overlong = _trl_rewards().get_soft_overlong_punishment(2 * max_length, max_length)
    lengths = _lengths(completions, completion_ids)
    # TRL's rule reads only each completion's length, so a range of that length stands in for its ids.
    scores = overlong([range(n) for n in lengths if n is not None])
    it = iter(scores)
    return [None if n is None else scale * next(it) + 0.0 for n in lengths]  # "+ 0.0": -0.0 reads 0.0 in logs


@layer("penalty")
def truncation_penalty(completions: Any, completion_ids: Any = None, *, max_completion_length: int | None = None,
                       penalty: float = -1.0, **columns: Any) -> list[float | None]:
    """``penalty`` for a completion that used all ``max_completion_length`` tokens.

    Needs TRL's ``completion_ids`` and the length limit; ``None`` where it cannot tell.

    >>> truncation_penalty(["a", "b"], completion_ids=[[1, 2], [1, 2, 3, 4]], max_completion_length=4)
    [0.0, -1.0]
    """
    if not max_completion_length or completion_ids is None:
        return [None] * len(as_batch(completions))
    return [None if n is None else (penalty if n >= max_completion_length else 0.0)
            for n in _lengths(completions, completion_ids, tokens_only=True)]


@layer("penalty")
def repetition_penalty(completions: Any, *, ngram: int = 4, scale: float = 1.0, **columns: Any) -> list[float | None]:
    """``-scale`` times the share of repeated word n-grams (0 for no repetition).

    TRL's repetition penalty (``trl.rewards.get_repetition_penalty_reward``) computes
    it; ours feeds it the completion's words rather than its token ids, so the score
    does not depend on the tokenizer and works on any text.

    >>> repetition_penalty(["one two three four five six", "a b a b a b"], ngram=2)
    [0.0, -0.6]
    """
    repeated = _trl_rewards().get_repetition_penalty_reward(ngram_size=ngram, max_penalty=-abs(scale))

    def score(text: str) -> float:
        return repeated(completion_ids=[text.split()])[0] + 0.0

    return [None if v is None else round(v, 6) for v in score_batch(completions, score)]


def _lengths(completions: Any, completion_ids: Any, tokens_only: bool = False) -> list[int | None]:
    batch = as_batch(completions)
    out: list[int | None] = []
    for i, completion in enumerate(batch):
        ids = None
        try:
            ids = completion_ids[i] if completion_ids is not None else None
        except (IndexError, TypeError, KeyError):
            ids = None
        if ids is not None and hasattr(ids, "__len__"):
            out.append(len(ids))
        elif tokens_only:
            out.append(None)
        else:
            text = completion_text(completion)
            out.append(len(text) if text is not None else None)
    return out


LAYERS: dict[str, Layer] = {
    fn.__name__: fn
    for fn in (
        format_exact, format_approximate, xml_count, xml_strict_format, xml_soft_format,
        check_answer_numeric, check_number, check_integer, check_answer_exact, check_math_verify,
        check_dapo_answer, length_penalty, truncation_penalty, repetition_penalty,
    )
}
