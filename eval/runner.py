"""Run an evaluation: prompts -> generations -> verdicts, written as they come, resumable."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from aha.formats import InputError, get_format

from .backends import Sampling
from .files import read_json, read_text, write_json
from .grading import grade, summarize
from .tasks import Problem

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
FINGERPRINT_FILE = "fingerprint.json"


def fingerprint(fmt: Any, sampling: Sampling, backend: str, adapter: str | None, meta: dict[str, Any]) -> dict[str, Any]:
    """What the stored answers depend on, apart from the problems themselves (each stored row
    carries its own question and gold, checked one by one): resuming with anything else
    would mix answers of two different evaluations."""
    import dataclasses
    import hashlib

    definition = json.dumps(dataclasses.asdict(fmt), sort_keys=True, default=str)
    return {"model": str(meta.get("model")), "adapter": str(meta.get("adapter", adapter)),
            "backend": backend,
            "format": fmt.name, "format_sha256": hashlib.sha256(definition.encode()).hexdigest()[:16],
            "sampling": vars(sampling)}


def asking(fmt: Any, problems: list[Problem]) -> dict[str, Any]:
    """How the problems are asked and graded, where that is not the default: the task's
    instruction as the format applies it, and the grader (part of the fingerprint and the
    summary)."""
    out: dict[str, Any] = {}
    instructions = sorted({fmt.ask("", p.instruction).strip() for p in problems} - {""})
    if instructions:
        out["instruction"] = instructions[0] if len(instructions) == 1 else instructions
    graders = sorted({p.grader for p in problems} - {"numeric"})
    if graders:
        out["grader"] = graders[0] if len(graders) == 1 else graders
    return out


def check_resumable(out_dir: str | Path, problems: list[Problem], format: Any, sampling: Sampling, backend: str,
                    adapter: str | None = None, meta: dict[str, Any] | None = None) -> None:
    """Refuse, before any model loads, an output folder that holds another evaluation's results."""
    out, fmt = Path(out_dir), get_format(format)
    _check_resumable(out, read_done(out / SAMPLES_FILE), problems,
                     {**fingerprint(fmt, sampling, backend, adapter, meta or {}), **asking(fmt, problems)})


def _check_resumable(out: Path, done: dict[str, dict[str, Any]], problems: list[Problem], print_: dict[str, Any]) -> None:
    path = out / FINGERPRINT_FILE
    if done and path.is_file():
        stored = read_json(path)
        diff = sorted(k for k in set(stored) | set(print_) if stored.get(k) != print_.get(k))
        if diff:
            raise InputError(f"{out} holds results of another evaluation ({', '.join(diff)} differ: "
                             f"{', '.join(f'{k} {stored.get(k)!r} -> {print_.get(k)!r}' for k in diff[:2])}); "
                             "use another --out, or delete the folder to start over")
    by_id = {p.id: p for p in problems}
    foreign = [i for i in done if i not in by_id]
    changed = [i for i, row in done.items() if i in by_id and (row.get("question") != by_id[i].question
                                                               or str(row.get("answer")) != by_id[i].answer)]
    if foreign or changed:
        example = (foreign or changed)[0]
        raise InputError(f"{out} holds results for other problems ({len(changed)} with the same id but another "
                         f"question or answer, {len(foreign)} not in this evaluation, e.g. {example}); "
                         "use another --out for another data file, task or limit")


ROW_VERDICTS = ("format_ok", "strict", "lenient")  # what every graded sample carries (comparisons read them)


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already written, by problem id. A torn last line (killed mid-write) is dropped;
    anything else that is not a result row is an error naming the file and line."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    lines = read_text(path, hint="so not a results file").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # the torn last line of a killed run
                continue
            raise InputError(f"{path}:{n}: not valid JSON") from None
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("samples"), list)
                and row["samples"] and all(isinstance(g, dict) for g in row["samples"])):
            raise InputError(f"{path}:{n}: not a result row (needs an 'id' and a non-empty list of 'samples')")
        if not all(g.get(k) in (True, False) for g in row["samples"] for k in ROW_VERDICTS):  # 0 and 1 too
            raise InputError(f"{path}:{n}: a result row without its verdicts (each sample needs "
                             f"{', '.join(ROW_VERDICTS)}, as aha eval writes them)")
        done[row["id"]] = row
    return done


def _rewrite_clean(path: Path, rows: list[dict[str, Any]]) -> None:
    """Drop a torn trailing line before appending, so the file stays valid JSONL."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _append_rows(fd: int, path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows and make them durable, all of them or none: a write that fails (a full
    disk) is cut back to where it began, and the error names the file."""
    block = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as err:
        os.ftruncate(fd, start)
        raise OSError(err.errno, err.strerror, str(path)) from err


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("aha-recipes", "torch", "transformers", "peft", "trl", "vllm", "math-verify"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def evaluate(backend: Any, problems: list[Problem], out_dir: str | Path, format: Any = "unsloth",
             sampling: Sampling | None = None, adapter: str | None = None, chunk: int = 32,
             meta: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``problems`` and write ``samples.jsonl`` (one row per problem, flushed per
    chunk) and ``summary.json``. Re-running with the same ``out_dir`` skips the rows
    already written, so a killed run resumes and ends with the same metrics."""
    sampling = sampling or Sampling()
    fmt = get_format(format)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples_path = out / SAMPLES_FILE
    done = read_done(samples_path)
    ids = {p.id for p in problems}
    if len(ids) != len(problems):
        raise InputError("problem ids are not unique")
    print_ = {**fingerprint(fmt, sampling, getattr(backend, "name", type(backend).__name__), adapter, meta or {}),
              **asking(fmt, problems)}
    _check_resumable(out, done, problems, print_)
    write_json(out / FINGERPRINT_FILE, print_)
    _rewrite_clean(samples_path, [done[p.id] for p in problems if p.id in done])
    todo = [p for p in problems if p.id not in done]
    tokenizer = backend.tokenizer
    started = time.time()
    # The bar is closed (its line ended) before any error reaches the user's terminal.
    with _progress(len(problems), len(problems) - len(todo), progress) as bar, \
            open(samples_path, "ab") as fh:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            prompts = [fmt.build_prompt(tokenizer, p.question, p.instruction) for p in part]
            kwargs = {"adapter": adapter} if adapter else {}
            generations = backend.generate(prompts, sampling, **kwargs)
            rows = []
            for problem, gens in zip(part, generations):
                graded = [{**grade(g.text, problem.answer, fmt, g.truncated, problem.grader),
                           "num_tokens": g.num_tokens, "text": g.text} for g in gens]
                rows.append({"id": problem.id, "question": problem.question, "answer": problem.answer,
                             "samples": graded})
            _append_rows(fh.fileno(), samples_path, rows)  # a chunk at once: a resume starts at a chunk boundary
            done.update((row["id"], row) for row in rows)
            bar.update(len(part))
    rows = [done[p.id] for p in problems]
    summary = {
        "results": summarize(rows),
        "config": {"format": fmt.name, "adapter": adapter, "backend": getattr(backend, "name", type(backend).__name__),
                   "sampling": vars(sampling), "grader": "numeric", **asking(fmt, problems), **(meta or {})},
        "versions": versions(),
        "timing": {"seconds_this_run": round(time.time() - started, 3), "generated_this_run": len(todo)},
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="eval", unit="problem", disable=not enabled)
