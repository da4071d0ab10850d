"""What every reward shares: reading completions and gold answers, never raising, and
counting the completions a layer raised on."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aha.formats import InputError, gold_from_gsm8k

MODES = ("default", "faithful")
KINDS = ("format", "answer", "penalty", "other")  # what a reward scores, as it declares it ("other": it does not say)
log = logging.getLogger("aha")


@dataclass
class ErrorTally:
    """Completions a reward raised on during one call, and the first traceback."""

    count: int = 0
    first_traceback: str | None = None


# The tally of the reward call running in this thread or task. A completion that makes a
# layer raise scores None (TRL skips it) so one odd completion cannot end a run; the
# calling Reward reads its own tally, so two rewards scoring at once never mix counts.
_TALLY: ContextVar[ErrorTally | None] = ContextVar("aha_reward_error_tally", default=None)
_WARNED_UNTALLIED: set[str] = set()  # layers called directly (not through a Reward): warned once each


def completion_text(completion: Any) -> str | None:
    """The text of one completion: a string, or TRL's conversational form
    (a list of ``{"role", "content"}`` messages, whose contents are joined).

    >>> completion_text([{"role": "assistant", "content": "<SOLUTION>4</SOLUTION>"}])
    '<SOLUTION>4</SOLUTION>'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content")
        return content if isinstance(content, str) else None
    if isinstance(completion, (list, tuple)):
        parts = [completion_text(m) for m in completion]
        parts = [p for p in parts if p is not None]
        return "".join(parts) if parts else None
    return None


def as_batch(completions: Any) -> Sequence[Any]:
    if completions is None:
        return ()
    if isinstance(completions, (str, dict)):
        return (completions,)  # one completion passed on its own
    try:
        return list(completions)
    except TypeError:
        return (completions,)


def gold_for(golds: Any, index: int, faithful: bool) -> str | None:
    """The gold answer of completion ``index`` from a dataset column (or ``None``)."""
    if golds is None or isinstance(golds, (str, bytes)):
        golds = [golds] if isinstance(golds, str) else None
    if golds is None:
        return None
    try:
        gold = golds[index]
    except (IndexError, KeyError, TypeError):
        return None
    if faithful and isinstance(gold, str) and "####" not in gold:
        return gold  # the recipes compare against the column verbatim
    return gold_from_gsm8k(gold)


def score_batch(completions: Any, score: Callable[..., float | None], golds: Any = None,
                needs_gold: bool = False, faithful: bool = False) -> list[float | None]:
    """Apply ``score(text)`` / ``score(text, gold)`` to each completion.

    A completion with no text, a missing gold (when needed) or any exception gives
    ``None`` (TRL ignores ``None`` for that function), never a crashed training run.
    """
    out: list[float | None] = []
    for i, completion in enumerate(as_batch(completions)):
        text = completion_text(completion)
        value = None
        if text is not None:
            try:
                if needs_gold:
                    gold = gold_for(golds, i, faithful)
                    value = score(text, gold) if gold is not None else None
                else:
                    value = score(text)
            except Exception:  # noqa: BLE001 - one completion must not end a run; counted, never silent
                _record_error(score)
                value = None
        out.append(None if value is None else float(value))
    return out


def _record_error(score: Callable[..., Any]) -> None:
    tally = _TALLY.get()
    if tally is not None:
        tally.count += 1
        if tally.first_traceback is None:
            tally.first_traceback = traceback.format_exc().rstrip()
        return
    where = getattr(score, "__qualname__", type(score).__name__).replace(".<locals>", "")
    if where not in _WARNED_UNTALLIED:
        _WARNED_UNTALLIED.add(where)
        log.warning("reward %s raised on a completion; it scores None there. First traceback:\n%s", where,
                    traceback.format_exc().rstrip())


def tallied(call: Callable[[], list], tally: ErrorTally) -> list:
    """Run ``call`` with ``tally`` counting the completions it raised on (this thread/task only)."""
    token = _TALLY.set(tally)
    try:
        return call()
    finally:
        _TALLY.reset(token)


def check_mode(mode: str) -> str:
    """``mode`` itself, or a clear error when it is not one of ``MODES``."""
    if mode not in MODES:
        raise InputError(f"unknown reward mode {mode!r}; use 'default' or 'faithful'")
    return mode
