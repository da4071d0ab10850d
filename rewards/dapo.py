"""aha's DAPO grading (default mode): the last ``Answer: ...`` line, normalised.

The answer is read as verl reads it (:func:`aha.formats.format.last_answer_line`: the last
``Answer:`` line in the last 300 characters). The normaliser below is aha's own, in the
spirit of the Minerva one verl uses but more forgiving of how models write answers (unit
words inside ``\\text{}``, ``\\%``, ``\\,`` spacing); the default reward also accepts equal
numeric values. ``mode="faithful"`` is verl's rule exactly (:mod:`aha.rewards.faithful`).
"""

from __future__ import annotations

import re

from aha.formats import find_last_boxed
from aha.formats.answers import THOUSANDS_NUMBER
from aha.formats.format import last_answer_line

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
    if THOUSANDS_NUMBER.fullmatch(s):
        s = s.replace(",", "")
    return s


def extract_dapo_answer(text: str) -> str | None:
    """The last ``Answer:`` line in the last 300 characters, unnormalised (stripped)."""
    line = last_answer_line(text)
    return line.strip() if line is not None else None
