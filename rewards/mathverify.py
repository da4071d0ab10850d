"""math-verify equivalence, safe to call from any thread and bounded in time.

math-verify's own timeouts use ``signal.alarm``, which raises outside the main thread
(TRL and eval code may score in threads), and sympy can compute for minutes on a short
answer (``(1+x)^{999}``, ``9!!!!``). So every verdict that needs the parser is asked of a
helper process, which is stopped and replaced when it has not answered within
``LIMIT_SECONDS``: a hard bound for any input, on any thread. Shapes known to be
pathological (towers of powers, factorials of factorials, huge exponents) get their
verdict before that, without the parser, as do plain decimal numbers (exact comparison
is the same verdict, about 100x faster; the benchmark checks the verdicts agree).
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from functools import lru_cache

from aha.formats.answers import THOUSANDS_NUMBER, is_equation

# math-verify rounds to 6 decimals and 15 significant digits: within those limits
# exact comparison gives its verdict, beyond them we let it decide.
_PLAIN_DECIMAL = re.compile(r"-?\d{1,9}(?:\.\d{1,6})?")
MAX_CHARS = 300  # longer "answers" are not final answers; parsing them is unbounded work
MAX_POWERS = 3  # 2^{2^{2^{...}}} can take sympy minutes
LIMIT_SECONDS = 1.0  # the most one parse or comparison may take; a legit answer takes milliseconds


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
_REPEATED_FACTORIAL = re.compile(r"!\s*!")  # 9!!!!, 100!!: multi-factorials and factorials of factorials
_FACTORIAL_OF_GROUP = re.compile(r"[)}]\s*!")  # (10!)!, {3^{9}}!
MAX_EXPONENT_DIGITS = 4  # 2^{9999} is instant; 9^{99999} already makes sympy work for seconds


def too_big_to_evaluate(text: str) -> bool:
    r"""Answers whose value sympy would spend seconds or minutes computing (towers and
    powers of powers, huge exponents, factorials of large numbers, of factorials or of
    powers, multi-factorials). They are never a sensible final answer, so they get a
    verdict without the parser.

    >>> [too_big_to_evaluate(t) for t in ["10^{10^{10}}", "(9^9)^(9^9)", "2^3^4", "9^{99999}", "12345!"]]
    [True, True, True, True, True]
    >>> [too_big_to_evaluate(t) for t in ["9!!!!", "100!!", "(10!)!", "{3^{9}}!"]]
    [True, True, True, True]
    >>> [too_big_to_evaluate(t) for t in ["2^{10}", "3^5 \\cdot 2^{3}", "(x+1)^2", "5!", "(n+1)!"]]
    [False, False, False, False, False]
    """
    if _BIG_FACTORIAL.search(text) or _REPEATED_FACTORIAL.search(text):
        return True
    if any(_group_has(text, m.start(), ("!", "^", "**")) for m in _FACTORIAL_OF_GROUP.finditer(text)):
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
    return any(_group_has(text, m.start(), ("^", "**")) for m in _POWER_OF_POWER.finditer(text))


def _group_has(text: str, close: int, marks: tuple[str, ...]) -> bool:
    """Does the bracketed group that closes at ``close`` contain any of ``marks``?"""
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
                return any(mark in inner for mark in marks)
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
def _parse(text: str):
    from math_verify import parse

    # Wrapping in \boxed{} makes math-verify read the whole string as the answer. No timeout of its own:
    # the process that runs this is stopped from outside when it takes too long.
    return parse("\\boxed{" + text + "}", parsing_timeout=None)


def _answer(question: tuple[str, ...]) -> bool | None:
    """What the helper computes: ``("gold", text)`` -> does it parse; ``("pair", gold, guess)``
    -> are they equivalent."""
    from math_verify import verify

    try:
        if question[0] == "gold":
            return bool(_parse(question[1]))
        guess = _parse(question[2])
        return bool(guess) and bool(verify(_parse(question[1]), guess, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - math-verify raises many kinds on odd input: not equivalent
        return False


def serve() -> None:
    """The helper process (``python -m aha.rewards.mathverify``): one JSON question per line on
    stdin, one JSON answer per line on stdout, until stdin closes."""
    import json
    import sys

    for line in sys.stdin:
        sys.stdout.write(json.dumps(_answer(tuple(json.loads(line)))) + "\n")
        sys.stdout.flush()


class _TimedOut(Exception):
    pass


class _Helper:
    """math-verify in a child process, so that any one verdict can be bounded by stopping it.
    One per process, shared by its threads (their questions take turns). A plain
    subprocess, not multiprocessing: it never re-runs the caller's own script."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc = None
        self.buffer = b""
        self.golds: dict[str, bool] = {}  # gold text -> parses (a gold that timed out counts as not parsing)
        self.usable = True

    def _start(self) -> None:
        import os
        import subprocess
        import sys

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # it imports what we import
        self.proc = subprocess.Popen([sys.executable, "-m", "aha.rewards.mathverify"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.buffer = b""

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                stream.close()
        self.proc = None

    def _read_line(self, limit: float) -> bytes:
        import os
        import select
        import time

        deadline = time.monotonic() + limit
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self._stop()  # still computing: stopped, and a fresh helper answers the next question
                raise _TimedOut
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                self._stop()
                raise _TimedOut
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def ask(self, question: tuple[str, ...]) -> bool | None:
        import json

        if self.proc is None:
            self._start()
            try:  # the first answer waits for the helper to start and import math-verify
                self.proc.stdin.write(json.dumps(["gold", "1"]).encode() + b"\n")
                self.proc.stdin.flush()
                if json.loads(self._read_line(120)) is not True:
                    raise _TimedOut
            except (_TimedOut, OSError, ValueError):
                self._stop()
                raise OSError("the math-verify helper process did not start") from None
        self.proc.stdin.write(json.dumps(question).encode() + b"\n")
        self.proc.stdin.flush()
        return json.loads(self._read_line(LIMIT_SECONDS))

    def equal(self, gold: str, guess: str | None) -> bool | None:
        with self.lock:
            if gold not in self.golds:
                if len(self.golds) > 4096:
                    self.golds.clear()
                try:
                    self.golds[gold] = bool(self.ask(("gold", gold)))
                except _TimedOut:
                    self.golds[gold] = False
            if not self.golds[gold]:
                return None
            if guess is None:
                return False
            try:
                return bool(self.ask(("pair", gold, guess)))
            except _TimedOut:
                return False


_HELPER = _Helper()


def _in_process(gold: str, guess: str | None) -> bool | None:
    """Where no helper process can start: math-verify here, with its own timeouts on the main
    thread; elsewhere bounded only by the input checks."""
    from math_verify import parse, verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
    except Exception:  # noqa: BLE001
        return None
    if not gold_parsed:
        return None
    if guess is None:
        return False
    try:
        guess_parsed = parse("\\boxed{" + guess + "}", parsing_timeout=timeout)
        return bool(guess_parsed) and bool(verify(gold_parsed, guess_parsed, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001
        return False


def math_equal(gold: str | None, guess: str | None) -> bool | None:
    """Is ``guess`` mathematically equal to ``gold``? ``None`` if the gold cannot be parsed.
    Within ``LIMIT_SECONDS`` of math-verify time for any input, on any thread.

    >>> math_equal("0.5", "\\\\frac{1}{2}"), math_equal("1,234", "1234"), math_equal("3", "4")
    (True, True, False)
    >>> math_equal("\\\\frac{1}{s+1}-\\\\frac{e^{-1}}{s}", "\\\\frac{1}{s+1}-\\\\frac{e^{-1}}{s}")
    True
    """
    if not isinstance(gold, str):
        return None
    if isinstance(guess, str) and guess.split() == gold.split() and gold.strip():
        return True  # the same text is the same answer, also where math-verify cannot parse it (4 Minerva golds)
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
        if is_equation(guess_text) != is_equation(gold_text):
            return False  # an equation is not the value on its right-hand side (nor the other way round)
    if not _HELPER.usable:
        return _in_process(gold_text, guess_text)
    try:
        return _HELPER.equal(gold_text, guess_text)
    except (OSError, ValueError):  # no helper can run here (no pipes, no select): verdicts in this process
        _HELPER.usable = False
        return _in_process(gold_text, guess_text)


if __name__ == "__main__":
    serve()
