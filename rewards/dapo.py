"""DAPO-style grading: the last ``Answer: ...`` line, normalised Minerva-style.

The rule (as verl grades DAPO-Math): take the last match of
``(?i)Answer\\s*:\\s*([^\\n]+)`` within the last 300 characters, normalise it and the
gold the same way (text after the last ``=``, unit words removed, ``\\text{}`` and
``\\boxed{}`` unwrapped, ``$`` and spaces and thousands commas dropped), and compare
strings.
"""

from __future__ import annotations

import re

from aha.formats import find_last_boxed
from aha.formats.format import ANSWER_LINE_PATTERN, DAPO_TAIL_CHARS

_UNIT_WORDS = (
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "points",
    "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
    "edges", "students", "multiples",
)
_UNIT_PATTERN = re.compile(r"\\(?:text|mbox|mathrm)\{\s*(?:" + "|".join(_UNIT_WORDS) + r")\s*\}|\b(?:" + "|".join(_UNIT_WORDS) + r")\b")
_DROP = ("\\$", "$", "\\!", "\\;", "\\,", "\\ ", "^\\circ", "^{\\circ}", "\\%", "%", "\\left", "\\right", "\\dots", "\\ldots")
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox|overline)\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\([dt]?)frac(\d)(\d)")  # \frac12 -> \frac{1}{2}
_SQRT_SHORT = re.compile(r"\\sqrt(\d)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def normalize_final_answer(answer: str) -> str:
    r"""Normalise a final answer for string comparison (Minerva-style).

    >>> normalize_final_answer(r"x = \boxed{1,000} \text{ dollars}")
    '1000'
    >>> normalize_final_answer(r"\frac12")
    '\\frac{1}{2}'
    """
    s = answer.strip()
    if "=" in s:
        s = s.rsplit("=", 1)[-1]
    boxed = find_last_boxed(s)
    if boxed is not None:
        s = boxed
    s = _UNIT_PATTERN.sub("", s)
    for _ in range(3):  # nested wrappers, bounded
        s = _WRAPPERS.sub(r"\1", s)
    for token in _DROP:
        s = s.replace(token, "")
    s = _FRAC_SHORT.sub(r"\\\1frac{\2}{\3}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace(" ", "").strip().rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s


def extract_dapo_answer(text: str) -> str | None:
    """The last ``Answer:`` line in the last 300 characters, unnormalised."""
    found = None
    for found in ANSWER_LINE_PATTERN.finditer(text[-DAPO_TAIL_CHARS:]):
        pass
    return found.group(1).strip() if found else None
