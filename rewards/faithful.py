"""The published recipes' reward semantics, value for value, bugs included.

``mode="faithful"`` uses these, so a run can be compared with the notebooks users
copy. Each function scores ONE completion text against ONE gold string.

The Unsloth answer pattern is a regex (``<end_working_out>.*?<SOLUTION>(.+?)</SOLUTION>
\\s*(?:eos)?\\s*$``, MULTILINE|DOTALL, searched) that backtracks catastrophically on
completions that repeat the tags. We compute the same match with a linear scan; the
tests compare both on random strings.
"""

from __future__ import annotations

import re

from aha.formats import Format

# ---------------------------------------------------------------------------------
# Unsloth Qwen3 GRPO recipe
# ---------------------------------------------------------------------------------
_NUMBER_AFTER_SOLUTION = re.compile(r"-?[\d\.\,]{1,}")


def _whitespace_run_end(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i].isspace():  # str.isspace is exactly regex \s for str patterns
        i += 1
    return i


def _tail_matches(text: str, i: int, eos: str) -> bool:
    """Does ``[\\s]{0,}(?:eos)?[\\s]{0,}$`` (MULTILINE) match at ``i``?

    Under MULTILINE ``$`` also matches before any newline, so a newline right after
    the closing tag lets trailing text through: a quirk of the original we keep.
    """
    j = _whitespace_run_end(text, i)
    if j == len(text) or "\n" in text[i:j]:
        return True
    if eos and text.startswith(eos, j):
        k = j + len(eos)
        end = _whitespace_run_end(text, k)
        return end == len(text) or "\n" in text[k:end]
    return False


def unsloth_answer_match(text: str, fmt: Format, eos: str = "") -> str | None:
    """Group 1 of the recipe's answer regex on ``text``, or ``None`` when it does not match."""
    start = text.find(fmt.reasoning_end)
    if start < 0:
        return None
    sol = text.find(fmt.answer_start, start + len(fmt.reasoning_end))
    if sol < 0:
        return None
    body = sol + len(fmt.answer_start)
    close = text.find(fmt.answer_end, body + 1)  # (.+?) takes at least one character
    while close >= 0:
        if _tail_matches(text, close + len(fmt.answer_end), eos):
            return text[body:close]
        close = text.find(fmt.answer_end, close + 1)
    return None


def match_format_exactly(text: str, fmt: Format, eos: str = "") -> float:
    return 3.0 if unsloth_answer_match(text, fmt, eos) is not None else 0.0


def match_format_approximately(text: str, fmt: Format) -> float:
    # The reasoning-start tag is prefilled by the chat template, so it is not counted.
    return sum(0.5 if text.count(tag) == 1 else -1.0 for tag in (fmt.reasoning_end, fmt.answer_start, fmt.answer_end))


def check_answer(text: str, gold: str, fmt: Format, eos: str = "") -> float:
    guess = unsloth_answer_match(text, fmt, eos)
    if guess is None:
        return -2.0
    if guess == gold:
        return 5.0
    if guess.strip() == gold.strip():
        return 3.5
    try:
        ratio = float(guess) / float(gold)
    except (ValueError, ZeroDivisionError, OverflowError):
        return -4.5
    if 0.9 <= ratio <= 1.1:
        return 2.0
    if 0.8 <= ratio <= 1.2:
        return 1.5
    return -2.5


def check_numbers(text: str, gold: str, fmt: Format) -> float:
    sol = text.find(fmt.answer_start)
    found = _NUMBER_AFTER_SOLUTION.search(text, sol + len(fmt.answer_start)) if sol >= 0 else None
    if found is None:
        return -2.5
    try:
        return 3.5 if float(gold.strip()) == float(found.group(0).strip().replace(",", "")) else -1.5
    except (ValueError, OverflowError):
        return 0.0


# ---------------------------------------------------------------------------------
# The GSM8K reasoning/answer XML recipe (its tags are fixed, whatever the format)
# ---------------------------------------------------------------------------------
# No DOTALL: multi-line reasoning never matches. That is the published bug.
_XML_STRICT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$")
# The soft pattern, r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>" with re.match,
# backtracks quadratically on a long line of repeated tags; soft_format_reward_func
# computes the same verdict in linear time.


def extract_xml_answer(text: str) -> str:
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def xmlcount_reward_func(text: str) -> float:
    count = 0.0
    if text.count("<reasoning>\n") == 1:
        count += 0.125
    if text.count("\n</reasoning>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return count


def _xml_soft_matches(text: str) -> bool:
    if not text.startswith("<reasoning>"):
        return False
    first_newline = text.find("\n")
    first_line_end = len(text) if first_newline < 0 else first_newline
    closing = text.find("</reasoning>", 11, first_line_end)  # '.' never crosses a newline
    failed_line_end = -1
    while closing >= 0:
        after = _whitespace_run_end(text, closing + 12)  # '\s*' may cross newlines
        if text.startswith("<answer>", after):
            body = after + 8
            newline = text.find("\n", body)
            line_end = len(text) if newline < 0 else newline
            # On one line, a later start only shrinks the region searched: skip repeats.
            if line_end != failed_line_end:
                if text.find("</answer>", body, line_end) >= 0:
                    return True
                failed_line_end = line_end
        closing = text.find("</reasoning>", closing + 1, first_line_end)
    return False


def soft_format_reward_func(text: str) -> float:
    return 0.5 if _xml_soft_matches(text) else 0.0


def strict_format_reward_func(text: str) -> float:
    return 0.5 if _XML_STRICT.match(text) else 0.0


def int_reward_func(text: str) -> float:
    return 0.5 if extract_xml_answer(text).isdigit() else 0.0


def correctness_reward_func(text: str, gold: str) -> float:
    return 2.0 if extract_xml_answer(text) == gold else 0.0


# ---------------------------------------------------------------------------------
# DAPO-Math as verl grades it (verl/utils/reward_score/math_dapo.py; docs/SOURCES.md)
# ---------------------------------------------------------------------------------
# The Minerva normalisation (Lewkowycz et al. 2022), step by step. Both tables are the
# published rule's data and their order matters: each entry is a plain text replacement
# applied to the result of the one before ("\\text{}^2" must go before "\\text{}").
MINERVA_REPLACEMENTS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)
MINERVA_DELETIONS = (
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue", "points",
    "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges", "students",
    "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3",
    "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots",
)
_INSIDE_FIRST_DOLLARS = re.compile(r".*?\$(.*?)\$.*")  # "." stops at a newline, as in the original
_UNWRAP_LAZY = [re.compile(r"\\" + name + r"\{(.*?)\}") for name in ("text", "textbf", "overline")]
_UNWRAP_BOXED = re.compile(r"\\boxed\{(.*)\}")  # greedy: up to the LAST closing brace
_FRAC_SHORTHAND = re.compile(r"frac([^{])(.)")
_SQRT_SHORTHAND = re.compile(r"sqrt([^{])")
DAPO_INVALID = "[INVALID]"  # what verl grades when there is no answer line


def minerva_normalize(answer: str) -> str:
    r"""verl's DAPO normalisation of a final answer, value for value.

    >>> minerva_normalize(r"x = \$1,000 dollars"), minerva_normalize(r"\frac12"), minerva_normalize("10\\%")
    ('1000', '\\frac{1}{2}', '10\\%')
    """
    s = answer.split("=")[-1]
    for old, new in MINERVA_REPLACEMENTS:
        s = s.replace(old, new)
    for gone in MINERVA_DELETIONS:
        s = s.replace(gone, "")
    s = _INSIDE_FIRST_DOLLARS.sub(lambda m: "$" + m.group(1) + "$", s)
    for wrapper in _UNWRAP_LAZY:
        s = wrapper.sub(lambda m: m.group(1), s)
    s = _UNWRAP_BOXED.sub(lambda m: m.group(1), s)
    s = _FRAC_SHORTHAND.sub(lambda m: "frac{" + m.group(1) + "}{" + m.group(2) + "}", s)
    s = _SQRT_SHORTHAND.sub(lambda m: "sqrt{" + m.group(1) + "}", s)
    s = s.replace("$", "")
    if s.replace(",", "").isdigit():
        s = s.replace(",", "")
    return s.strip()


def dapo_verl_score(text: str, gold: str) -> float:
    """+1.0 when the last ``Answer:`` line of the last 300 characters normalises to the
    normalised gold, else -1.0 (a missing line is graded as the text ``[INVALID]``)."""
    from aha.formats.format import last_answer_line

    line = last_answer_line(text)
    guess = minerva_normalize(line if line is not None else DAPO_INVALID)
    return 1.0 if guess == minerva_normalize(gold) else -1.0
