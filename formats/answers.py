"""Reading answers out of model text: boxed expressions, numbers, normalisation.

Everything here is linear in the length of the text (no regex that can backtrack
catastrophically), because rewards call it on every completion of every step.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A number as people write it in a final answer: optional sign and currency,
# digits with optional thousands commas, optional decimals, optional percent.
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
# A number with thousands commas (1,000 or -12,345.5): the one definition in the package.
THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_LATEX_FRAC = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}")
_SLASH_FRAC = re.compile(r"(-?\d+)\s*/\s*(-?\d+)")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)\{([^{}]*)\}")
# LaTeX spacing inside numbers (57\,500, 57{,}500, 57\ 500) and degree marks.
_LATEX_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|~")  # not the row break \\ of a matrix
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?")
# A number followed by unit words (18 dollars, 5 cm^2, 3 km per hour): the words are dropped.
_NUMBER_WITH_UNITS = re.compile(r"(.*?\d)\s*([A-Za-z][A-Za-z .]{0,40}?)(?:\^\{?[23]\}?)?")
# What may stand left of "=" in a final answer that is a value: a name (x, N, \\theta, a_1), not an equation.
_NAME = re.compile(r"\\?[A-Za-z]+(?:_\{?\w+\}?)?")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
# lm-evaluation-harness "flexible-extract": the last number-like token.
_NUMBER_TOKEN = re.compile(r"-?[$0-9.,]{2,}|-?[0-9]+")


def find_last_boxed(text: str, max_tries: int = 3) -> str | None:
    r"""Return the content of the last balanced ``\boxed{...}`` (or ``\fbox{...}``).

    >>> find_last_boxed(r"so $\boxed{\frac{1}{2}}$ and then \boxed{7}")
    '7'
    >>> find_last_boxed("no box") is None
    True
    """
    if not isinstance(text, str):
        return None
    end = len(text)
    for _ in range(max_tries):  # a few unbalanced boxes at the end must not cost O(n^2)
        start = max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))
        if start < 0:
            return None
        brace = text.find("{", start)
        if brace < 0 or text[start:brace].strip() not in ("\\boxed", "\\fbox"):
            end = start
            continue
        depth = 0
        for i in range(brace, len(text)):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[brace + 1 : i]
        end = start
    return None


def clean_answer(text: str) -> str:
    r"""Strip the decoration around a final answer: spaces, ``$``, ``\boxed{}``,
    ``\text{}``, a trailing full stop.

    >>> clean_answer(r" $\boxed{1,234}$. ")
    '1,234'
    """
    s = text.strip()
    boxed = find_last_boxed(s) if "\\boxed" in s or "\\fbox" in s else None
    if boxed is not None:
        s = boxed.strip()
    s = s.replace("{,}", ",")
    if "\\" in s or "~" in s:
        s = _TEXT_WRAPPER.sub(r"\1", s)
        s = _DEGREES.sub("", s)
        s = _LATEX_SPACING.sub(lambda m: "" if m.group(0) != "\\ " else " ", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "%")
    s = s.strip().rstrip(".").strip()
    return s


def parse_number(text: object) -> Fraction | None:
    r"""Parse a final answer written as a number; ``None`` if it is not one.

    Accepts signs, ``$``, thousands commas (also LaTeX's ``57{,}500`` and ``57\,500``),
    decimals, ``a/b``, ``\frac{a}{b}``, a trailing ``%`` (taken as the number itself,
    the way GSM8K answers are written), degrees, ``\boxed{}``, and unit words after the
    number (``18 \text{ dollars}``, ``5 cm^2``). Exact: returns a :class:`fractions.Fraction`.

    >>> parse_number("$1,234.50")
    Fraction(2469, 2)
    >>> parse_number(r"\boxed{\frac{3}{4}}")
    Fraction(3, 4)
    >>> parse_number(r"\boxed{57{,}500}"), parse_number(r"18 \text{ dollars}"), parse_number("12 apples")
    (Fraction(57500, 1), Fraction(18, 1), Fraction(12, 1))
    >>> parse_number("apples") is None, parse_number("3 x 4") is None, parse_number("5x - 7y + 4 = 0") is None
    (True, True, True)
    >>> parse_number("x = 18"), parse_number(r"\theta = 0.5")
    (Fraction(18, 1), Fraction(1, 2))
    """
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        return Fraction(text) if text == text and abs(text) != float("inf") else None
    if not isinstance(text, str) or len(text) > 200:
        return None
    s = clean_answer(text)
    if "=" in s and not is_equation(s):  # "x = 18", "x = y = 18": the value after the last "="
        s = s.rsplit("=", 1)[1].strip()
    value = _parse_plain(s)
    if value is None:
        units = _NUMBER_WITH_UNITS.fullmatch(s)
        if units and not units.group(2).strip().lower().startswith(("x ", "times", "plus", "minus", "and", "or")):
            value = _parse_plain(units.group(1))
    return value


def _parse_plain(s: str) -> Fraction | None:
    if s.endswith("%"):
        s = s[:-1].strip()
    s = s.replace(" ", "")
    if s.startswith("+"):
        s = s[1:]
    if THOUSANDS_NUMBER.fullmatch(s):
        s = s.replace(",", "")
    if _PLAIN_NUMBER.fullmatch(s):
        return Fraction(s)
    m = _LATEX_FRAC.fullmatch(s) or _SLASH_FRAC.fullmatch(s)
    if m:
        groups = m.groups()
        sign = -1 if len(groups) == 3 and groups[0] == "-" else 1
        num, den = int(groups[-2]), int(groups[-1])
        return Fraction(sign * num, den) if den != 0 else None
    return None


def is_equation(text: str) -> bool:
    """An equation, not a value: left of an ``=`` stands an expression with unknowns. A name
    (``x = 18``) or plain arithmetic (``23 - 9 = 14``) there still gives the value on the right.

    >>> is_equation("5x - 7y + 4 = 0"), is_equation("x = 18"), is_equation("23 - 9 = 14"), is_equation("18")
    (True, False, False, False)
    """
    if "=" not in text:
        return False
    left = text.rsplit("=", 1)[0]
    if all(_NAME.fullmatch(part.strip()) for part in left.split("=")):
        return False
    return any(ch.isalpha() for ch in _LATEX_COMMAND.sub("", left))


def last_number(text: str) -> str | None:
    """The last number-like token in ``text``, cleaned of ``$``, commas and a
    trailing full stop (lm-evaluation-harness's flexible-extract rule).

    >>> last_number("It costs $1,200. Then 3 more.")
    '3'
    >>> last_number("The total is $1,200.")
    '1200'
    """
    if not isinstance(text, str):
        return None
    found = None
    for found in _NUMBER_TOKEN.finditer(text):
        pass
    if found is None:
        return None
    token = found.group(0).replace(",", "").replace("$", "").rstrip(".")
    return token if any(ch.isdigit() for ch in token) else None


def gold_from_gsm8k(answer: object) -> str | None:
    """GSM8K writes the gold answer after ``####``; a bare answer is kept as is.

    >>> gold_from_gsm8k("48/2 = <<48/2=24>>24 clips\\n#### 72")
    '72'
    >>> gold_from_gsm8k(34)
    '34'
    """
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        return str(answer)
    if not isinstance(answer, str):
        return None
    if "####" in answer:
        answer = answer.split("####")[-1]
    answer = answer.strip()
    return answer or None


def answers_equal(guess: object, gold: object) -> bool | None:
    """Numeric equality of two final answers; ``None`` when the gold is not a number.

    >>> answers_equal("$1,000", "1000")
    True
    >>> answers_equal("0.5", "1/2")
    True
    >>> answers_equal("7", "x") is None
    True
    """
    gold_value = parse_number(gold)
    if gold_value is None:
        return None
    guess_value = parse_number(guess)
    return guess_value is not None and guess_value == gold_value


def answers_match(guess: object, gold: object) -> bool:
    """Equal by value when the gold is a number, else equal as cleaned strings.

    >>> answers_match("$1,000", "1000"), answers_match(r"\\text{blue}", "blue"), answers_match(None, "1")
    (True, True, False)
    """
    if not isinstance(guess, str) or not isinstance(gold, str):
        return False
    verdict = answers_equal(guess, gold)
    return verdict if verdict is not None else clean_answer(guess) == clean_answer(gold)
