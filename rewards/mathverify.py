"""math-verify equivalence, safe to call from any thread and bounded in time.

math-verify's own timeouts use ``signal.alarm``, which raises outside the main
thread (TRL and eval code may score in threads). Off the main thread we turn those
timeouts off and bound the work ourselves: short inputs only, no towers of powers.
Plain decimal numbers never reach the parser (exact comparison is the same verdict,
about 100x faster); the benchmark checks the verdicts agree.
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from functools import lru_cache

from aha.formats.answers import THOUSANDS_NUMBER

# math-verify rounds to 6 decimals and 15 significant digits: within those limits
# exact comparison gives its verdict, beyond them we let it decide.
_PLAIN_DECIMAL = re.compile(r"-?\d{1,9}(?:\.\d{1,6})?")
MAX_CHARS = 300  # longer "answers" are not final answers; parsing them is unbounded work
MAX_POWERS = 3  # 2^{2^{2^{...}}} can take sympy minutes
TIMEOUT_SECONDS = 5


class _DropTimeoutDisabledNotice(logging.Filter):
    """Off the main thread we disable math-verify's alarms on purpose (and bound the
    input instead); its notice about that would otherwise be logged on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledNotice())


_INT_FRACTION = re.compile(r"(-?\d{1,9})/(-?\d{1,9})|\\[dt]?frac\{(-?\d{1,9})\}\{(-?\d{1,9})\}")


_POW = r"(?:\^|\*\*)"
_EXPONENT_DIGITS = re.compile(_POW + r"\s*[{(]?\s*-?(\d+)")
_POWER_IN_EXPONENT = re.compile(_POW + r"\s*[{(][^{}()]*" + _POW)  # 10^{10^{10}}, (9^9)^(9^9)
_POWER_OF_POWER = re.compile(r"[)}]\s*" + _POW)  # (10^{99})^{99}: a power of a group holding a power
_TOWER = re.compile(_POW + r"\s*\d+\s*" + _POW)  # 2^3^4
_BIG_FACTORIAL = re.compile(r"\d{4,}\s*!")
MAX_EXPONENT_DIGITS = 4  # 2^{9999} is instant; 9^{99999} already makes sympy work for seconds


def too_big_to_evaluate(text: str) -> bool:
    r"""Answers whose value sympy would spend seconds or minutes computing (towers and
    powers of powers, huge exponents, factorials of large numbers). They are never a
    sensible final answer, so they get a verdict without the parser.

    >>> [too_big_to_evaluate(t) for t in ["10^{10^{10}}", "(9^9)^(9^9)", "2^3^4", "9^{99999}", "12345!"]]
    [True, True, True, True, True]
    >>> [too_big_to_evaluate(t) for t in ["2^{10}", "3^5 \\cdot 2^{3}", "(x+1)^2", "5!"]]
    [False, False, False, False]
    """
    if _BIG_FACTORIAL.search(text):
        return True
    powers = text.count("^") + text.count("**")
    if not powers:
        return False
    if any(len(d) > MAX_EXPONENT_DIGITS for d in _EXPONENT_DIGITS.findall(text)):
        return True
    if powers == 1:
        return False
    if _POWER_IN_EXPONENT.search(text) or _TOWER.search(text):
        return True
    return any(_group_has_power(text, m.start()) for m in _POWER_OF_POWER.finditer(text))


def _group_has_power(text: str, close: int) -> bool:
    """Does the bracketed group that closes at ``close`` contain a power?"""
    closing = text[close]
    opening = "(" if closing == ")" else "{"
    depth = 0
    for i in range(close, -1, -1):
        if text[i] == closing:
            depth += 1
        elif text[i] == opening:
            depth -= 1
            if depth == 0:
                inner = text[i + 1 : close]
                return "^" in inner or "**" in inner
    return False


def _prepare(text: str) -> str | None:
    s = text.strip().rstrip(".").strip()
    if not s or len(s) > MAX_CHARS or s.count("^") > MAX_POWERS or too_big_to_evaluate(s):
        return None
    if s.startswith("\\boxed{") and s.endswith("}") and s.count("{") == 1:
        s = s[7:-1].strip()
    bare = s.replace("\\$", "").replace("$", "").strip()
    if _PLAIN_DECIMAL.fullmatch(bare) or THOUSANDS_NUMBER.fullmatch(bare):
        s = bare.replace(",", "")  # "1,234" is a number, not the pair (1, 234)
    return s


def _plain(text: str) -> Fraction | None:
    return Fraction(text) if _PLAIN_DECIMAL.fullmatch(text) else None


def _fast_verdict(gold: str, guess: str) -> bool | None:
    """The verdict without the parser where it provably agrees with math-verify:
    two plain decimals, or an integer gold against an integer fraction."""
    gold_value = _plain(gold)
    if gold_value is None:
        return None
    guess_value = _plain(guess)
    if guess_value is not None:
        return guess_value == gold_value
    fraction = _INT_FRACTION.fullmatch(guess) if gold_value.denominator == 1 else None
    if fraction:
        num, den = (int(x) for x in fraction.groups() if x is not None)
        return den != 0 and Fraction(num, den) == gold_value
    return None


@lru_cache(maxsize=4096)
def _parse(text: str, in_main: bool):
    from math_verify import parse

    # Wrapping in \boxed{} makes math-verify read the whole string as the answer.
    timeout = TIMEOUT_SECONDS if in_main else None
    return parse("\\boxed{" + text + "}", parsing_timeout=timeout)


def math_equal(gold: str | None, guess: str | None) -> bool | None:
    """Is ``guess`` mathematically equal to ``gold``? ``None`` if the gold cannot be parsed.

    >>> math_equal("0.5", "\\\\frac{1}{2}"), math_equal("1,234", "1234"), math_equal("3", "4")
    (True, True, False)
    """
    if not isinstance(gold, str):
        return None
    gold_text = _prepare(gold)
    if gold_text is None:
        return None
    guess_text = _prepare(guess) if isinstance(guess, str) else None
    if guess_text is None and _plain(gold_text) is not None:
        return False  # a plain number always parses: no need to ask the parser
    if guess_text is not None:
        fast = _fast_verdict(gold_text, guess_text)
        if fast is not None:
            return fast
    from math_verify import verify

    in_main = threading.current_thread() is threading.main_thread()
    try:
        gold_parsed = _parse(gold_text, in_main)
    except Exception:
        return None
    if not gold_parsed:
        return None
    if guess_text is None:
        return False
    try:
        guess_parsed = _parse(guess_text, in_main)
        return bool(guess_parsed) and bool(verify(gold_parsed, guess_parsed, timeout_seconds=TIMEOUT_SECONDS if in_main else None))
    except Exception:
        return False
