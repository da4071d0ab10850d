"""Run an evaluation: prompts -> generations -> verdicts, written as they come, resumable."""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from aha.formats import InputError, get_format
from aha.rewards.references import is_reference, source_digest

from .backends import Sampling, prompts_per_batch_for
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
    own = [g for g in graders if is_reference(g)]
    if own:  # your grader's source and what it imports: a resume never mixes verdicts of two versions
        out["grader_sha256"] = [source_digest(g)[:16] for g in own]
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


@dataclass
class EvalJob:
    """One evaluation: ``problems`` asked in ``format`` with ``sampling``, answers written to ``out_dir``."""

    problems: list[Problem]
    out_dir: str | Path
    format: Any = "unsloth"
    sampling: Sampling | None = None
    adapter: str | None = None
    meta: dict[str, Any] | None = None


class _Running:
    """An evaluation under way: its folder checked and opened, the problems it still has to answer."""

    def __init__(self, backend: Any, job: EvalJob):
        self.sampling, self.fmt, self.out = job.sampling or Sampling(), get_format(job.format), Path(job.out_dir)
        self.problems, self.adapter, self.meta = job.problems, job.adapter, job.meta or {}
        self.out.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.out / SAMPLES_FILE
        self.done = read_done(self.samples_path)
        if len({p.id for p in self.problems}) != len(self.problems):
            raise InputError("problem ids are not unique")
        self.backend_name = getattr(backend, "name", type(backend).__name__)
        self.asked = asking(self.fmt, self.problems)  # once: it hashes your grader's files
        print_ = {**fingerprint(self.fmt, self.sampling, self.backend_name, self.adapter, self.meta), **self.asked}
        _check_resumable(self.out, self.done, self.problems, print_)
        write_json(self.out / FINGERPRINT_FILE, print_)
        _rewrite_clean(self.samples_path, [self.done[p.id] for p in self.problems if p.id in self.done])
        self.todo = [p for p in self.problems if p.id not in self.done]
        self.generated = len(self.todo)

    def next_chunk(self, tokenizer: Any, chunk: int) -> tuple[list[Problem], list[str]]:
        part, self.todo = self.todo[:chunk], self.todo[chunk:]
        return part, [self.fmt.build_prompt(tokenizer, p.question, p.instruction) for p in part]

    def record(self, fh: Any, part: list[Problem], generations: list[list[Any]]) -> None:
        rows = []
        for problem, gens in zip(part, generations):
            graded = [{**grade(g.text, problem.answer, self.fmt, g.truncated, problem.grader),
                       "num_tokens": g.num_tokens, "text": g.text} for g in gens]
            rows.append({"id": problem.id, "question": problem.question, "answer": problem.answer, "samples": graded})
        _append_rows(fh.fileno(), self.samples_path, rows)  # a chunk at once: a resume starts at a chunk boundary
        self.done.update((row["id"], row) for row in rows)

    def summary(self, seconds: float) -> dict[str, Any]:
        rows = [self.done[p.id] for p in self.problems]
        summary = {
            "results": summarize(rows),
            "config": {"format": self.fmt.name, "adapter": self.adapter, "backend": self.backend_name,
                       "sampling": vars(self.sampling), "grader": "numeric", **self.asked,
                       **self.meta},
            "versions": versions(),
            "timing": {"seconds_this_run": round(seconds, 3), "generated_this_run": self.generated},
        }
        write_json(self.out / SUMMARY_FILE, summary)
        return summary


def evaluate(backend: Any, problems: list[Problem], out_dir: str | Path, format: Any = "unsloth",
             sampling: Sampling | None = None, adapter: str | None = None, chunk: int = 32,
             meta: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``problems`` and write ``samples.jsonl`` (one row per problem, flushed per
    chunk) and ``summary.json``. Re-running with the same ``out_dir`` skips the rows
    already written, so a killed run resumes and ends with the same metrics."""
    job = EvalJob(problems, out_dir, format, sampling, adapter, meta)
    return evaluate_together(backend, [job], chunk=chunk, progress=progress)[0]


def evaluate_together(backend: Any, jobs: list[EvalJob], chunk: int = 32, progress: bool = True) -> list[dict[str, Any]]:
    """Several evaluations at once (``evaluate`` for each, the same files and resume): each round takes the next
    chunk of every evaluation still going, and an engine that serves mixed requests (vLLM) generates them in one
    batch, so a stage's tasks, greedy and sampled, share one pass of the engine rather than one pass each."""
    running = [_Running(backend, job) for job in jobs]  # every folder checked before anything is generated
    total = sum(len(r.problems) for r in running)
    started = time.time()
    with _progress(total, total - sum(len(r.todo) for r in running), progress) as bar, ExitStack() as files:
        handles = [files.enter_context(open(r.samples_path, "ab")) for r in running]
        while any(r.todo for r in running):
            going = [(r, fh) for r, fh in zip(running, handles) if r.todo]
            chunks = [r.next_chunk(backend.tokenizer, chunk) for r, _ in going]
            requests = [(prompts, r.sampling, r.adapter) for (r, _), (_, prompts) in zip(going, chunks)]
            for (r, fh), (part, _), generations in zip(going, chunks, generate_all(backend, requests)):
                r.record(fh, part, generations)
                bar.update(len(part))
    return [r.summary(time.time() - started) for r in running]


def generate_all(backend: Any, requests: list[tuple[list[str], Sampling, str | None]]) -> list[list[list[Any]]]:
    """Every request's generations: in one call where the backend takes mixed requests (``generate_many``),
    else one request at a time (the HF backend's batch shrunk for a request's samples, as for one evaluation)."""
    if len(requests) > 1 and hasattr(backend, "generate_many"):
        # Greedy requests in one call, sampled ones in another: once any row of a batch samples with top-p, vLLM's
        # CPU sampler sorts every row over the whole vocabulary, greedy rows included.
        out: list[Any] = [None] * len(requests)
        for group in ([i for i, r in enumerate(requests) if r[1].temperature == 0],
                      [i for i, r in enumerate(requests) if r[1].temperature != 0]):
            for i, generations in zip(group, backend.generate_many([requests[i] for i in group]) if group else []):
                out[i] = generations
        return out
    out = []
    for prompts, sampling, adapter in requests:
        with prompts_per_batch_for(backend, sampling.n):
            out.append(backend.generate(prompts, sampling, **({"adapter": adapter} if adapter else {})))
    return out


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="eval", unit="problem", disable=not enabled)
