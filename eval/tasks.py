"""Evaluation tasks: GSM8K, DAPO-Math held-out, built-in arithmetic.

A task is a list of :class:`Problem` with normalised gold answers. Hub loading is
kept for users; a local jsonl/parquet path in the same schema works offline.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from aha.formats import InputError, gold_from_gsm8k

from .files import read_json, read_parquet, read_text

CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")
DAPO_HUB = ("open-r1/DAPO-Math-17k-Processed", "en")
GSM8K_HUB = ("openai/gsm8k", "main")
TASKS = ("gsm8k", "dapo-math", "arith")
GENERATED_TASKS = ("arith",)  # problems made from a seed: replicates move it


@dataclass(frozen=True)
class Problem:
    """One problem: a stable id, the question, the gold answer, and (when the
    source has one) a worked solution for SFT."""

    id: str
    question: str
    answer: str
    solution: str = ""


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a local .jsonl / .json / .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such data file: {path}")
    if path.suffix == ".parquet":
        return read_parquet(path)
    text = read_text(path, hint="a data file is UTF-8 jsonl, json or parquet")
    if path.suffix == ".json":
        data = read_json(path, hint="a .json data file is a list of rows or {\"data\": [rows]}", kind=None)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise InputError(f"{path}: a .json data file is a list of rows or {{\"data\": [rows]}}")
        return data
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"{path}:{n}: not valid JSON") from None
    return rows


def _check_rows(rows: list, columns: dict[str, tuple[type, ...]], source: str) -> None:
    """Every row a mapping whose columns have usable values; the message names the row."""
    if not rows:
        raise InputError(f"{source}: no problems in it")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InputError(f"{source}: row {n} is {type(row).__name__} {str(row)[:30]!r}, not a mapping with "
                             f"{', '.join(columns)}")
        for column, types in columns.items():
            value = row.get(column)
            if column not in row:
                raise InputError(f"{source}: row {n} has no {column!r} (columns: {', '.join(map(str, row))})")
            if not isinstance(value, types) or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
                raise InputError(f"{source}: row {n}: {column} must be a non-empty "
                                 f"{' or '.join(t.__name__ for t in types)}, not {str(value)[:30]!r}")


def _hub_rows(name: str, config: str, split: str) -> list[dict]:
    import datasets

    return list(datasets.load_dataset(name, config, split=split))


def _require(rows: list[dict], columns: tuple[str, ...], source: str) -> None:
    if rows and not all(c in rows[0] for c in columns):
        raise InputError(f"{source}: expected columns {list(columns)}, found {sorted(rows[0])}")


# ----- GSM8K ---------------------------------------------------------------------------
def load_gsm8k(path: str | Path | None = None, split: str = "test") -> list[Problem]:
    """GSM8K (``question``, ``answer`` ending in ``#### N``); worked solutions keep
    their text with the ``<<a*b=c>>`` calculator notes removed."""
    rows = read_rows(path) if path else _hub_rows(*GSM8K_HUB, split)
    _check_rows(rows, {"question": (str,), "answer": (str, int, float)}, str(path or GSM8K_HUB[0]))
    out = []
    for i, row in enumerate(rows):
        solution = CALCULATOR_NOTE.sub("", str(row["answer"]).split("####")[0]).strip() if "####" in str(
            row["answer"]) else ""
        out.append(Problem(f"gsm8k-{split}-{i}", row["question"], gold_from_gsm8k(row["answer"]) or "", solution))
    return out


# ----- DAPO-Math ---------------------------------------------------------------------------
def normalize_question(text: str) -> str:
    """Question text for de-duplication: case and whitespace folded."""
    return " ".join(text.lower().split())


def dapo_split(rows: list[dict], heldout: int = 500, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """THE split of DAPO-Math into (train, held-out). Training data loading calls this
    same function and keeps only the first part, so evaluation is never contaminated.

    Rows are de-duplicated by normalised question; questions whose copies disagree
    on the answer are dropped from both parts. The held-out problems are a seeded
    sample of the unique questions, chosen by a hash so they do not depend on row order.
    """
    _require(rows, ("prompt", "solution"), "DAPO-Math")
    answers: dict[str, set[str]] = {}
    first: dict[str, dict] = {}
    for row in rows:
        key = normalize_question(row["prompt"])
        answers.setdefault(key, set()).add(str(row["solution"]).strip())
        first.setdefault(key, row)
    keys = sorted(k for k, a in answers.items() if len(a) == 1)

    def rank(key: str) -> str:
        return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

    held = set(sorted(keys, key=rank)[:heldout])
    train, test = [], []
    for key in keys:
        row = first[key]
        problem = Problem("dapo-" + rank(key)[:12], row["prompt"], str(row["solution"]).strip())
        (test if key in held else train).append(problem)
    return train, test


def load_dapo(path: str | Path | None = None, part: str = "heldout", heldout: int = 500, seed: int = 0) -> list[Problem]:
    rows = read_rows(path) if path else _hub_rows(*DAPO_HUB, "train")
    _check_rows(rows, {"prompt": (str,), "solution": (str, int, float)}, str(path or DAPO_HUB[0]))
    train, test = dapo_split(rows, heldout=heldout, seed=seed)
    return test if part == "heldout" else train


# ----- Arithmetic (built in, no download) -----------------------------------------------------
_OPS = {
    "+": ("{a} {thing} on a shelf and {b} more are added. How many {thing} are on the shelf now?", lambda a, b: a + b),
    "-": ("A box holds {a} {thing}. {b} of them are taken out. How many {thing} are left in the box?", lambda a, b: a - b),
    "*": ("There are {a} bags with {b} {thing} in each bag. How many {thing} are there in total?", lambda a, b: a * b),
}
_THINGS = ("apples", "pencils", "marbles", "stickers", "books", "cookies", "coins", "cards")
LEVELS = {1: (1, 2, 40), 2: (2, 2, 30), 3: (3, 2, 60)}  # level: (operations, smallest, largest number)


def make_arith(n: int = 200, level: int = 1, seed: int = 0) -> list[Problem]:
    """Seeded word problems with exact integer answers and worked solutions.

    Level 1: one operation (+, -, x) on numbers 2-40; level 2: two operations;
    level 3: three operations on numbers up to 60. Subtractions never go below 0, and
    no question repeats.

    >>> p = make_arith(1, level=1, seed=3)[0]
    >>> p.answer.isdigit(), p.solution.endswith(f"= {p.answer}.")
    (True, True)
    """
    if level not in LEVELS:
        raise InputError(f"arith level must be one of {sorted(LEVELS)}, not {level}")
    steps, low, high = LEVELS[level]
    rng = random.Random(f"arith:{level}:{seed}")
    problems, seen = [], set()
    while len(problems) < n:
        thing = rng.choice(_THINGS)
        value = rng.randint(low, high)
        sentences, lines, expr = [], [], str(value)
        for step in range(steps):
            op = rng.choice("+-*")
            b = rng.randint(low, high if op != "*" else 12)
            if op == "-" and b > value:
                op = "+"
            template, fn = _OPS[op]
            if step == 0:
                sentences.append(template.format(a=value, b=b, thing=thing))
            else:
                sentences[-1] = sentences[-1].rsplit(" How many", 1)[0]
                follow = {"+": f"Then {b} more are added.", "-": f"Then {b} are taken away.",
                          "*": f"Then the amount is multiplied by {b}."}[op]
                sentences.append(follow + f" How many {thing} are there now?")
            new = fn(value, b)
            lines.append(f"{value} {op.replace('*', 'x')} {b} = {new}")
            expr = f"({expr} {op} {b})" if step else f"{value} {op} {b}"
            value = new
        question = " ".join(sentences)
        if question in seen:  # a repeated question would count twice in an evaluation
            continue
        seen.add(question)
        solution = "Compute step by step: " + expr + " = " + str(value) + ". " + "; ".join(lines) + "."
        problems.append(Problem(f"arith-l{level}-s{seed}-{len(problems)}", question, str(value), solution))
    return problems


def load_task(name: str, path: str | Path | None = None, limit: int | None = None, seed: int = 0,
              split: str = "test", level: int = 1, n: int = 200, heldout: int = 500) -> list[Problem]:
    """Problems of a task by name. ``limit`` keeps the first N (a fixed order)."""
    if name == "gsm8k":
        problems = load_gsm8k(path, split)
    elif name == "dapo-math":
        problems = load_dapo(path, "heldout" if split == "test" else "train", heldout=heldout, seed=seed)
    elif name == "arith":
        problems = make_arith(n, level=level, seed=seed)
    else:
        raise InputError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be at least 1, not {limit}")
        problems = problems[:limit]
    return problems
