"""Run an evaluation: prompts -> generations -> verdicts, written as they come, resumable."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from aha.formats import get_format

from .backends import Sampling
from .grading import grade, summarize
from .tasks import Problem

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already written, by problem id. A torn last line (killed mid-write) is dropped."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[row["id"]] = row
    return done


def _rewrite_clean(path: Path, rows: list[dict[str, Any]]) -> None:
    """Drop a torn trailing line before appending, so the file stays valid JSONL."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


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
        raise ValueError("problem ids are not unique")
    _rewrite_clean(samples_path, [done[p.id] for p in problems if p.id in done])
    todo = [p for p in problems if p.id not in done]
    tokenizer = backend.tokenizer
    started = time.time()
    bar = _progress(len(problems), len(problems) - len(todo), progress)
    with open(samples_path, "a", encoding="utf-8") as fh:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            prompts = [fmt.build_prompt(tokenizer, p.question) for p in part]
            kwargs = {"adapter": adapter} if adapter else {}
            generations = backend.generate(prompts, sampling, **kwargs)
            for problem, gens in zip(part, generations):
                graded = [{**grade(g.text, problem.answer, fmt, g.truncated), "num_tokens": g.num_tokens, "text": g.text}
                          for g in gens]
                row = {"id": problem.id, "question": problem.question, "answer": problem.answer, "samples": graded}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                done[problem.id] = row
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(part))
    bar.close()
    rows = [done[p.id] for p in problems]
    summary = {
        "results": summarize(rows),
        "config": {"format": fmt.name, "adapter": adapter, "backend": getattr(backend, "name", type(backend).__name__),
                   "sampling": vars(sampling), **(meta or {})},
        "versions": versions(),
        "timing": {"seconds_this_run": round(time.time() - started, 3), "generated_this_run": len(todo)},
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="eval", unit="problem", disable=not enabled)
