"""Evaluation tasks as data: one :class:`Task` record each (where the problems come from,
which fields hold the problem, gold and reference solution, the instruction the published
numbers used, and how answers are graded), and one loader for all of them.

GSM8K, MATH-500, AIME 2024/2025, AMC 2023, Minerva math and DAPO-Math (a held-out split and
training rows) ship in ``eval/data/`` and load offline; their hub copies stay reachable with
``--data`` or the hub loader. ``arith`` is generated from a seed.
"""

from __future__ import annotations

import csv
import os
import hashlib
import io
import json
import math
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aha.formats import InputError, find_last_boxed, gold_from_gsm8k, user_path

from .files import read_json, read_parquet, read_text

CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")
DAPO_HUB = ("open-r1/DAPO-Math-17k-Processed", "en")
GSM8K_HUB = ("openai/gsm8k", "main")
DATA = Path(__file__).parent / "data"
NEAR_DUPLICATE = 0.8  # the share of words two DAPO-Math questions share when one rewords the other
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Problem:
    """One problem: a stable id, the question, the gold answer, (when the source has one) a
    reference solution, the task's instruction and how its answers are graded."""

    id: str
    question: str
    answer: str
    solution: str = ""
    instruction: str = ""  # the task's own instruction; Format.build_prompt decides whether it applies
    grader: str = "numeric"  # numeric: equal values | math: equivalent LaTeX (math-verify) | exact | file.py:fn
    columns: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # your task's other fields


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a local .jsonl / .json / .csv / .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such data file: {path}")
    if path.suffix == ".parquet":
        return read_parquet(path)
    # Excel's "CSV UTF-8" (and some editors) begin the file with a byte-order mark, which would hide the first
    # column's name (or break the first JSON line)
    text = read_text(path, hint="a data file is UTF-8 jsonl, json, csv or parquet").removeprefix("\ufeff")
    if path.suffix == ".csv":
        return _csv_rows(path, text)
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
            except RecursionError:
                raise InputError(f"{path}:{n}: JSON nested too deep to be a row") from None
    return rows


def _csv_rows(path: Path, text: str) -> list[dict]:
    """Rows of a CSV file with a header line; every value is text, as the file holds it."""
    if text.lstrip().startswith(("{", "[")):
        raise InputError(f"{path}: holds JSON, not CSV (name it .jsonl or .json)")
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = [dict(row) for row in reader]
    except csv.Error as err:
        raise InputError(f"{path}: not valid CSV ({err})") from None
    for n, row in enumerate(rows, 2):
        if None in row:
            raise InputError(f"{path}:{n}: more values than the header has columns")
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
            if not isinstance(value, types) or isinstance(value, bool) or (isinstance(value, str) and not value.strip()) \
                    or (isinstance(value, float) and not math.isfinite(value)):
                raise InputError(f"{source}: row {n}: {column} must be a non-empty "
                                 f"{' or '.join(t.__name__ for t in types)}, not {str(value)[:30]!r}")


def _hub_rows(name: str, config: str, split: str) -> list[dict]:
    import datasets

    try:
        return list(datasets.load_dataset(name, config, split=split))
    except Exception as err:  # noqa: BLE001 - offline, a mistyped id, a missing split: one line naming the data set
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        offline = " (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set: only cached data sets can be read)" if any(
            os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")) else ""
        raise InputError(f"hub data set {name}" + (f" ({config})" if config else "") + f", split {split}: could not be "
                         f"read: {type(err).__name__}: {first}{offline}") from None


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
        gold = gold_from_gsm8k(row["answer"])
        if not gold:
            raise InputError(f"{path or GSM8K_HUB[0]}: row {i + 1}: no gold answer after '####' in its answer "
                             f"{str(row['answer'])[-40:]!r}")
        out.append(Problem(f"gsm8k-{split}-{i}", row["question"], gold, solution))
    return out


# ----- DAPO-Math ---------------------------------------------------------------------------
def normalize_question(text: str) -> str:
    """Question text for de-duplication: case and whitespace folded."""
    return " ".join(text.lower().split())


def question_words(text: str) -> frozenset[str]:
    """The words and numbers of a question, for telling paraphrases apart from other problems."""
    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def near_duplicate(a: frozenset[str], b: frozenset[str], threshold: float = NEAR_DUPLICATE) -> bool:
    """Two questions that share at least ``threshold`` of their words (Jaccard): the same problem
    reworded, as DAPO-Math has ("Find the number of ..." and "Find how many ...").

    >>> start = "Call a fraction special if its numerator and denominator are positive and sum to 15. "
    >>> a = question_words(start + "Find the number of distinct integers that are the sum of two special fractions.")
    >>> near_duplicate(a, question_words(start + "Find how many distinct integers are the sum of two special fractions."))
    True
    >>> near_duplicate(a, question_words(start + "Find the product of all special fractions."))
    False
    """
    if not a or not b or min(len(a), len(b)) < threshold * max(len(a), len(b)):
        return False
    return len(a & b) >= threshold * len(a | b)


def repair_form_feed(text: str) -> str:
    r"""Some DAPO-Math prompts were written with ``\frac`` escaped once too few times, so JSON read
    its ``\f`` as a form feed ("in the form <form feed>rac{m}{n}"); no problem means a form feed.

    >>> repair_form_feed("in the form \x0crac{m}{n}")
    'in the form \\frac{m}{n}'
    """
    return text.replace("\f", "\\f")


def dapo_unique(rows: list[dict], source: str) -> list[Problem]:
    """DAPO-Math rows (``prompt``, ``solution``) as problems, one per normalised question;
    questions whose copies disagree on the answer are dropped (the hub copy has some)."""
    _check_rows(rows, {"prompt": (str,), "solution": (str, int, float)}, source)
    answers: dict[str, set[str]] = {}
    first: dict[str, dict] = {}
    for row in rows:
        question = repair_form_feed(row["prompt"])
        key = normalize_question(question)
        answers.setdefault(key, set()).add(str(row["solution"]).strip())
        first.setdefault(key, {**row, "prompt": question})
    return [Problem(str(first[k].get("id") or dapo_id(first[k]["prompt"])), first[k]["prompt"],
                    str(first[k]["solution"]).strip()) for k in first if len(answers[k]) == 1]


def dapo_id(question: str) -> str:
    return "dapo-" + hashlib.sha256(normalize_question(question).encode()).hexdigest()[:12]


def numbers_in(text: str) -> tuple[str, ...]:
    """The numbers a question states, sorted: a reworded copy states the same ones."""
    return tuple(sorted(re.findall(r"\d+(?:\.\d+)?", text)))


def sentences(text: str) -> list[str]:
    """A question's sentences (split after . ? ! before the next sentence's capital or formula)."""
    return [s for s in re.split(r"(?<=[.?!])\s+(?=[A-Z$\\])", text.strip()) if s]


Words = tuple[frozenset[str], tuple[str, ...]]  # a text's words and numbers
RewordingKey = tuple[Words, bool, tuple[Words, ...]]  # the whole question, numbers must match, one sentence dropped


ASKS = re.compile(r"\?|\b(find|compute|determine|evaluate|calculate|simplify|solve|show|prove|express|give|what|how|"
                  r"which|who|when|where|why)\b", re.IGNORECASE)


def rewording_key(question: str, same_numbers: bool = False) -> RewordingKey:
    """What :func:`reworded` compares: the question's words and numbers, whether the numbers must
    match (``same_numbers``), and its words and numbers with each one sentence dropped (where what
    is left still asks something: a setup alone is not the problem)."""
    parts = sentences(question)
    dropped = [" ".join(parts[:i] + parts[i + 1:]) for i in range(len(parts))] if len(parts) > 1 else []
    dropped = [d for d in dropped if ASKS.search(d)]
    return ((question_words(question), numbers_in(question)), same_numbers,
            tuple((question_words(d), numbers_in(d)) for d in dropped))


def reworded(a: RewordingKey, b: RewordingKey) -> bool:
    """Are two questions (their :func:`rewording_key`) one problem reworded? Most words shared
    (:func:`near_duplicate`; with ``same_numbers`` every number the same too: templated problems
    share most words and differ only in their numbers), or the same once a sentence of one is
    dropped, numbers included: an instruction sentence added or left out ("Provide your answer
    as a single integer.") weighs too much in a short question for the words alone.

    >>> rope = "A rope is 4 meters long. How many centimeters long is it?"
    >>> reworded(rewording_key(rope, True), rewording_key(rope.replace("How", "So how"), True))
    True
    >>> reworded(rewording_key(rope, True), rewording_key(rope.replace("4", "7"), True))
    False
    >>> q = "The greatest prime divisor of $16{,}384$ is $2$. Find the sum of the digits of the greatest prime divisor of $16{,}383$."
    >>> longer = q.replace("Find", "What is").rstrip(".") + "? Provide your answer as a single integer."
    >>> near_duplicate(question_words(q), question_words(longer)), reworded(rewording_key(q), rewording_key(longer))
    (False, True)
    >>> reworded(rewording_key(q), rewording_key(longer.replace("16{,}383", "16{,}385")))
    False
    """
    (a_words, a_numbers), strict, a_dropped = a
    (b_words, b_numbers), _, b_dropped = b
    if (a_numbers == b_numbers or not strict) and near_duplicate(a_words, b_words):
        return True
    return any(n == b_numbers and near_duplicate(w, b_words) for w, n in a_dropped) or any(
        n == a_numbers and near_duplicate(a_words, w) for w, n in b_dropped)


def dapo_split(problems: list[Problem], heldout: int, seed: int = 0,
               same_numbers: bool = False) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out) of de-duplicated problems: the ``heldout`` whose seeded hash ranks lowest,
    whatever the row order, no two of them rewordings of one problem (:func:`reworded`; with
    ``same_numbers`` a rewording also keeps every number), and every rewording of a held-out
    problem kept out of training.
    This is how the shipped split (``eval/data/dapo-math``) was carved; a test checks it still is.

    >>> ps = [Problem(f"p{i}", f"Compute {i} plus {i} and then add {i + 1}.", str(3 * i + 1)) for i in range(8)]
    >>> train, held = dapo_split(ps, 3)
    >>> len(held), len(train), sorted(p.id for p in held) == sorted(p.id for p in dapo_split(ps[::-1], 3)[1])
    (3, 5, True)
    """
    def rank(p: Problem) -> str:
        return hashlib.sha256(f"{seed}:{normalize_question(p.question)}".encode()).hexdigest()

    held: list[Problem] = []
    held_keys: list[RewordingKey] = []
    for p in sorted(problems, key=rank):
        if len(held) == heldout:
            break
        key = rewording_key(p.question, same_numbers)
        if not any(reworded(key, k) for k in held_keys):  # a reworded copy would count twice
            held.append(p)
            held_keys.append(key)
    return dapo_training(problems, held, same_numbers), held


def dapo_training(problems: list[Problem], heldout: list[Problem], same_numbers: bool = False) -> list[Problem]:
    """THE training problems of a data set with held-out problems, from any copy (the shipped rows,
    the hub's, a file): every held-out problem is left out, and so is every rewording of one."""
    held = {normalize_question(p.question) for p in heldout}
    held_keys = [rewording_key(p.question, same_numbers) for p in heldout]

    def kept(p: Problem) -> bool:
        key = rewording_key(p.question, same_numbers)  # once per problem, not once per held-out problem
        return normalize_question(p.question) not in held and not any(reworded(key, k) for k in held_keys)

    return [p for p in problems if kept(p)]


def load_dapo(path: str | Path | None = None, part: str = "heldout", hub: bool = False) -> list[Problem]:
    """DAPO-Math: the held-out split that ships with aha (``path``: your own held-out file), or the
    training problems: the shipped rows, the hub's 14,116 (``hub``) or ``path``, always without
    the shipped held-out problems and their near-duplicates."""
    task = TASKS["dapo-math"]
    if part == "heldout":
        if hub and not path:
            raise InputError("dapo-math: the hub copy has no held-out split; the held-out problems ship with aha "
                             f"(eval/data/{task.file}), and training rows read from the hub leave them out")
        source = Path(path) if path else DATA / task.file
        return _rows_problems(task, read_rows(source), str(source))
    if path:
        rows, source = read_rows(path), str(path)
    elif hub:
        rows, source = _hub_rows(*DAPO_HUB, "train"), DAPO_HUB[0]
    else:
        rows, source = read_rows(DATA / task.train_file), str(DATA / task.train_file)
    return dapo_training(dapo_unique(rows, source), load_dapo(part="heldout"))


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


@dataclass(frozen=True)
class Task:
    """A task as data. ``answer`` names the gold's field, or ``boxed:FIELD`` for the last
    ``\\boxed{}`` of that field (Minerva's golds are in its solutions)."""

    name: str
    source: str  # what the data is, and where it came from (docs/SOURCES.md has the full entry)
    file: str | None = None  # shipped under eval/data/: loads offline
    train_file: str | None = None  # training rows shipped under eval/data/ (the hub has the full set)
    hub: tuple[str, str | None, str] | None = None  # (dataset, config, split) on the Hugging Face Hub
    question: str = "problem"
    answer: str = "answer"
    solution: str | None = None
    id: str | None = None  # a stable id field (default: the row's position)
    instruction: str = ""  # what the published numbers asked, applied through the recipe's format
    grader: str = "numeric"
    size: int | None = None  # the number of problems the source has (checked by the tests)
    generated: bool = False  # made from a seed (replicates move it), not read
    loader: str | None = None  # a loader of its own (tasks that are not a plain file of rows)
    trains: bool = False  # has training rows (split="train"): generated, shipped or on the hub
    solutions: bool = False  # its training rows carry worked solutions (what the SFT warmup renders)
    train_hub: tuple[str, str | None, str] | None = None  # your task: its training rows on the hub
    heldout: int | None = None  # your task from one file: this many problems held out for evaluation, the rest train
    own: bool = False  # defined by the user (a recipe's tasks section or a task YAML), not shipped


_MATH = {"instruction": BOXED_INSTRUCTION, "grader": "math"}
TASKS: dict[str, Task] = {t.name: t for t in (
    Task("gsm8k", "GSM8K test split (Cobbe et al. 2021; MIT)", file="gsm8k/test.jsonl", hub=(*GSM8K_HUB, "test"),
         question="question", size=1319, loader="gsm8k", trains=True, solutions=True),
    Task("math500", "MATH-500: the MATH test problems of PRM800K (Hendrycks et al. 2021, Lightman et al. 2023; MIT)",
         file="math500/test.jsonl", hub=("HuggingFaceH4/MATH-500", None, "test"), solution="solution",
         id="unique_id", size=500, **_MATH),
    Task("aime24", "AIME 2024 I and II (MAA; problems and answers as published on the AoPS wiki)",
         file="aime24/test.jsonl", solution="solution", id="id", size=30, **_MATH),
    Task("aime25", "AIME 2025 I and II (MAA; problems and answers as published on the AoPS wiki)",
         file="aime25/test.jsonl", id="id", size=30, **_MATH),
    Task("amc23", "AMC 12 2023 A and B, the 40 with integer answers (MAA; AoPS wiki)", file="amc23/test.jsonl",
         id="id", size=40, **_MATH),
    Task("minerva", "Minerva math: MIT OpenCourseWare problems (Lewkowycz et al. 2022; CC BY-NC-SA 4.0)",
         file="minerva/test.jsonl", answer="boxed:solution", solution="solution", id="idx", size=272, **_MATH),
    Task("dapo-math", "DAPO-Math-17k (Yu et al. 2025; Apache-2.0), English problems: a held-out split shipped "
         "with aha, training rows shipped and on the hub (open-r1/DAPO-Math-17k-Processed, en)",
         file="dapo-math/heldout.jsonl", train_file="dapo-math/train.jsonl", hub=(*DAPO_HUB, "train"),
         question="prompt", answer="solution", id="id", size=200, loader="dapo", trains=True),
    Task("arith", "arithmetic word problems generated from a seed (aha's own)", generated=True, loader="arith",
         trains=True, solutions=True),
)}
GENERATED_TASKS = tuple(name for name, t in TASKS.items() if t.generated)  # replicates move their seed
TRAINING_TASKS = tuple(name for name, t in TASKS.items() if t.trains)  # what data.task may name
SOLUTION_TASKS = tuple(name for name, t in TASKS.items() if t.trains and t.solutions)  # what the SFT warmup may read


def _gold(task: Task, row: dict, where: str) -> str:
    if task.answer.startswith("boxed:"):
        boxed = find_last_boxed(str(row.get(task.answer.split(":", 1)[1], "")))
        if boxed is None:
            raise InputError(f"{where}: no \\boxed{{}} answer in its {task.answer.split(':', 1)[1]}")
        return boxed.strip()
    value = row[task.answer]
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # AMC's 27.0 is the integer 27
    return str(value).strip()


# Keywords TRL passes every reward function itself: a task's own column cannot take one of these names.
TRL_REWARD_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state", "log_metric")
ROW_COLUMNS = ("prompt", "question", "answer", "id")  # what each GRPO row carries for every task


def _check_text(row: dict, fields: tuple[str | None, ...], where: str) -> None:
    """A field's text must be text a tokenizer can read: a lone surrogate (a broken decode) is named here, not
    found inside the tokenizer after the model has loaded."""
    for name in fields:
        value = row.get(name) if name else None
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InputError(f"{where}: its {name} holds {value[err.start]!r} at character {err.start + 1}, "
                                 "which is not text (a lone surrogate: the file was decoded wrongly)") from None


def _rows_problems(task: Task, rows: list[dict], source: str, prefix: str = "") -> list[Problem]:
    gold_field = task.answer.split(":", 1)[1] if task.answer.startswith("boxed:") else task.answer
    _check_rows(rows, {task.question: (str,), gold_field: (str, int, float)}, source)
    used = {task.question, gold_field, task.solution, task.id}
    out, seen = [], {}
    for i, row in enumerate(rows):
        where = f"{source}: row {i + 1}"
        if task.id and row.get(task.id) is not None and (not isinstance(row[task.id], (str, int))
                                                        or isinstance(row[task.id], bool)):
            raise InputError(f"{where}: its id ({task.id}) is {type(row[task.id]).__name__} "
                             f"{str(row[task.id])[:30]!r}; an id is a text or a whole number")
        _check_text(row, (task.question, task.solution), where)
        if task.id and row.get(task.id) is not None:
            if row[task.id] in seen:
                raise InputError(f"{where}: id {row[task.id]!r} again (first in row {seen[row[task.id]]}); ids must be "
                                 "unique, or results would pair two problems as one")
            seen[row[task.id]] = i + 1
            ident = f"{task.name}-{prefix}{row[task.id]}"
        else:
            ident = f"{task.name}-{prefix}{i}"
        columns = {}
        if task.own:  # your task's other fields reach your reward functions as keyword arguments
            columns = {k: v for k, v in row.items() if k not in used and isinstance(k, str) and k.isidentifier()
                       and k not in ROW_COLUMNS + TRL_REWARD_KEYWORDS and (v is None or isinstance(v, (str, int, float, bool)))}
        gold = _gold(task, row, where)
        odd = [c for c in gold if unicodedata.category(c) in ("No", "Nl")]  # ½ ² Ⅻ: numbers no parser reads
        if task.grader == "numeric" and odd:
            raise InputError(f"{where}: its gold {gold[:30]!r} writes a number with {odd[0]!r}, which no answer "
                             "extracted as a number can equal: write it in ASCII digits (1/2, 2^2), or set the task's "
                             "grader to math or exact")
        out.append(Problem(ident, row[task.question], gold,
                           str(row.get(task.solution) or "") if task.solution else "", task.instruction,
                           task.grader, columns))
    return out


def _own_problems(task: Task, split: str, path: str | Path | None, hub: bool) -> list[Problem]:
    """Your task's problems: its file (or hub split) for evaluation, its training file (or hub split)
    for training, or one file split in two (``heldout``: that many held out, no reworded copy of one
    in training)."""

    def read(file: str | Path | None, hub_split: tuple[str, str | None, str] | None, prefix: str = "") -> list[Problem]:
        """A local file (``path`` first) where there is one, else the hub split."""
        source = Path(path) if path else DATA / file if file else None
        if source is not None:
            return _rows_problems(task, read_rows(source), str(source), prefix=prefix)
        return _rows_problems(task, _hub_rows(*hub_split), hub_split[0], prefix=prefix)

    if task.heldout and not path:
        problems = read(task.file, task.hub)
        if task.heldout >= len(problems):
            raise InputError(f"{task.name}: heldout {task.heldout} leaves no training problems of its {len(problems)}")
        train, held = dapo_split(problems, task.heldout, same_numbers=True)
        return held if split == "test" else train
    if split == "train":
        return read(task.train_file, task.train_hub, prefix="train-")
    return read(task.file, task.hub)


_SPEC_KEYS = {"file": "evaluation rows: a local .jsonl, .json, .csv or .parquet file",
              "train_file": "training rows: a local file of the same fields",
              "hub": "a Hugging Face Hub dataset id (instead of file)",
              "config": "the hub dataset's config", "split": "its evaluation split (default test)",
              "train_split": "its training split", "heldout": "one file for both: this many problems held out",
              "question": "the field holding the question", "answer": "the field holding the gold answer",
              "solution": "the field holding a worked solution (what the SFT warmup renders)",
              "id": "the field holding a stable id", "instruction": "an instruction added to each question",
              "grader": "numeric, math, exact, or your function (path/to/file.py:fn, called as fn(answer, gold) -> bool)",
              "source": "what the data is and where it came from (its licence)"}


def task_from_spec(name: str, spec: Any, base_dir: str | Path | None = None) -> Task:
    """Your own task as data: a mapping (a recipe's ``tasks`` entry, or a task YAML file) naming
    where the rows are and which fields hold what. Paths are made absolute (relative to the
    working directory, else to ``base_dir``); nothing is read here but the spec itself.

    >>> t = task_from_spec("mine", {"file": "aime24/test.jsonl", "question": "problem", "heldout": 10}, DATA)
    >>> t.question, t.answer, t.trains, t.own, t.file.endswith("aime24/test.jsonl"), len(load_task(t, split="train"))
    ('problem', 'answer', True, True, True, 20)
    """
    from aha.rewards.references import check_reference, is_reference, resolve_reference

    from .grading import GRADERS

    if not isinstance(spec, dict):
        raise InputError(f"task {name}: a task is a mapping of {', '.join(_SPEC_KEYS)}, not {type(spec).__name__}")
    unknown = sorted(str(k) for k in spec if k not in _SPEC_KEYS)
    if unknown:
        raise InputError(f"task {name}: unknown key(s) {', '.join(unknown)}; a task takes "
                         + "; ".join(f"{k} ({v})" for k, v in _SPEC_KEYS.items()))
    for key, value in spec.items():
        if key == "heldout":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"task {name}: heldout must be a positive integer, not {value!r}")
        elif value is not None and not isinstance(value, str):
            raise InputError(f"task {name}: {key} must be text, not {type(value).__name__} {str(value)[:30]!r}")
    if name in TASKS or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"task {name!r}: choose a plain name (letters, digits, - _ .) that is not a shipped task's "
                         f"({', '.join(TASKS)})")

    def local(key: str) -> str | None:
        value = spec.get(key)
        if not value:
            return None
        path = user_path(value, base_dir)
        if not path.is_file():
            raise InputError(f"task {name}: {key}: no such data file: {value}")
        return str(path.resolve())

    file, train_file, hub = local("file"), local("train_file"), spec.get("hub")
    if bool(file) == bool(hub):
        raise InputError(f"task {name}: give its rows as file (a local file) or hub (a dataset id), one of the two")
    if spec.get("heldout") and (train_file or spec.get("train_split")):
        raise InputError(f"task {name}: heldout splits one file in two; with train_file or train_split the two are "
                         "already apart")
    if file and train_file == file:
        raise InputError(f"task {name}: train_file is its file ({spec.get('file')}): training would read the evaluation "
                         "rows; give training rows a file of their own, or set heldout: N to split this one")
    if hub and spec.get("train_split") and spec.get("train_split") == (spec.get("split") or "test"):
        raise InputError(f"task {name}: train_split is its split ({spec['train_split']}): training would read the "
                         "evaluation rows; name another split, or set heldout: N to split this one")
    grader = spec.get("grader") or "numeric"
    if is_reference(grader):
        grader = resolve_reference(grader, base_dir)
        check_reference(grader)
    elif grader not in GRADERS:
        raise InputError(f"task {name}: grader must be one of {', '.join(GRADERS)} or your function "
                         f"(path/to/file.py:fn), not {grader!r}")
    trains = bool(train_file or spec.get("train_split") or spec.get("heldout"))
    return Task(name=name, source=spec.get("source") or f"your task ({file or hub})", file=file,
                train_file=train_file, hub=(hub, spec.get("config"), spec.get("split") or "test") if hub else None,
                train_hub=(hub, spec.get("config"), spec["train_split"]) if hub and spec.get("train_split") else None,
                question=spec.get("question") or "question", answer=spec.get("answer") or "answer",
                solution=spec.get("solution"), id=spec.get("id"), instruction=spec.get("instruction") or "",
                grader=grader, trains=trains, solutions=trains and bool(spec.get("solution")),
                heldout=spec.get("heldout"), own=True)


def read_task_spec(path: str | Path) -> Any:
    """The mapping in a task YAML file (the same keys as a recipe's ``tasks`` entry)."""
    from aha.formats.yamlfile import read_yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such task file: {path}")
    return read_yaml(path, "task file")  # YAML 1.2, as recipes are read


def read_task_file(path: str | Path) -> Task:
    """A task YAML file (``aha eval --task my-task.yaml``) as a task named after the file; its
    paths are relative to the working directory, else to the file's folder."""
    return task_from_spec(Path(path).stem, read_task_spec(path), Path(path).parent)


def longest_first(problems: list[Problem], limit: int | None) -> list[Problem]:
    """The ``limit`` problems with the longest questions, in their task's order.

    >>> [p.id for p in longest_first([Problem("a", "1 + 1", "2"), Problem("b", "12 + 100", "112"),
    ...                               Problem("c", "3", "3")], 2)]
    ['a', 'b']
    """
    keep = set(sorted(range(len(problems)), key=lambda i: -len(problems[i].question))[:limit])
    return [p for i, p in enumerate(problems) if i in keep]


def load_task(name: str | Task, path: str | Path | None = None, limit: int | None = None, seed: int = 0,
              split: str = "test", level: int = 1, n: int = 200, hub: bool = False) -> list[Problem]:
    """Problems of a task by name (or your own :class:`Task`): from ``path`` when given, else the
    shipped file (offline), else (or with ``hub``) the Hugging Face Hub. ``limit`` keeps the first
    N (a fixed order).

    >>> [len(load_task(t)) for t in ("math500", "aime24", "aime25", "amc23", "minerva", "dapo-math")]
    [500, 30, 30, 40, 272, 200]
    """
    if isinstance(name, Task):
        task, name = name, name.name
    elif name not in TASKS:
        raise InputError(f"unknown task {name!r}; known: {', '.join(TASKS)}, or your own (a task YAML file)")
    else:
        task = TASKS[name]
    if split == "train" and not task.trains:
        raise InputError(f"{name} has no training rows (only a test split); tasks that train: {', '.join(TRAINING_TASKS)}"
                         + (", or give yours train_file, train_split or heldout" if task.own else ""))
    if task.own:
        problems = _own_problems(task, split, path, hub)
    elif task.loader == "gsm8k":
        problems = load_gsm8k(path or (DATA / task.file if split == "test" and not hub else None), split)
    elif task.loader == "dapo":
        problems = load_dapo(path, "heldout" if split == "test" else "train", hub=hub)
    elif task.loader == "arith":
        problems = make_arith(n, level=level, seed=seed)
    elif path or (task.file and not hub):
        source = Path(path) if path else DATA / task.file
        problems = _rows_problems(task, read_rows(source), str(source))
    else:
        problems = _rows_problems(task, _hub_rows(*task.hub), task.hub[0])
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be at least 1, not {limit}")
        problems = problems[:limit]
    return problems
