"""Faults: the smoke recipe killed with SIGKILL in every stage and re-run each time ends
with exactly what an uninterrupted run gives; a second writer is refused while the first
runs; a full disk while writing evaluation rows or a checkpoint ends in one line and the
same command resumes once space is back (a real small filesystem, tmpfs, where the
machine lets root mount one)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SMOKE = ["tiny-qwen3-smoke", "--set", "grpo.max_steps=4", "--set", "sft.num_examples=16",
         "--set", "eval.tasks=[{task: arith, level: 1, limit: 8, seed: 0}]", "--set", "export.verify=false"]  # one task: CI time
EVALS = ("eval-before", "eval-after-sft", "eval-after")


def _aha(*args):
    return [sys.executable, "-c", "import sys; from aha.recipes.cli import main; sys.exit(main())", *args]


def _env(tmp_path):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}


def _rows(run, stage, task="arith-l1"):
    path = run / stage / task / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _done(run):
    try:
        return json.loads((run / "state.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return {}


# Where to kill, in stage order, decided by events in the run itself (conftest.py, kill points), not by timing.
KILL_POINTS = ["rows:eval-before", "checkpoint:sft", "rows:eval-after-sft", "preflight:", "checkpoint:grpo",
               "rows:eval-after", "merged:"]


def test_killed_in_every_stage_ends_as_an_uninterrupted_run(tmp_path, kill_points):
    env = _env(tmp_path)
    ref, run, marker = tmp_path / "ref", tmp_path / "run", tmp_path / "reached"
    done = subprocess.run(_aha("run", *SMOKE, "--out", str(ref)), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    refused_once = False
    for point in KILL_POINTS:
        proc = kill_points.paused_at(point, marker, ["-c", kill_points.aha_main, "run", *SMOKE, "--out", str(run)],
                                     env)
        if not refused_once:  # a second writer, while the first one runs
            second = subprocess.run(_aha("run", *SMOKE, "--out", str(run)), env=env, capture_output=True, text=True,
                                    timeout=300)
            assert second.returncode == 2 and f"is in use by another aha process (pid {proc.pid})" in second.stderr
            refused_once = True
        kill_points.kill(proc, marker)
    assert refused_once
    done = subprocess.run(_aha("run", *SMOKE, "--out", str(run)), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (run / "run.log").read_text()
    assert "took over the run folder's lock from pid" in log
    assert "resuming from" in log and "grpo/checkpoints/checkpoint-" in log  # GRPO went on from its checkpoint
    assert list(_done(run)) == list(_done(ref))
    for stage in EVALS:
        for task in ("arith-l1", "arith-l1-sampled"):
            if (ref / stage / task).is_dir():
                assert _rows(run, stage, task) == _rows(ref, stage, task), (stage, task)
    for stage in ("sft", "grpo"):
        assert _done(run)[stage]["steps"] == _done(ref)[stage]["steps"]
    # Nothing half-written is left behind, and what shipped loads.
    assert not [p for p in run.rglob("*.tmp")] and not [p for p in run.rglob(".*.tmp")]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run / "base"), run / "export" / "adapter")
    AutoModelForCausalLM.from_pretrained(run / "export" / "merged")


# ----- a full disk ----------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmpfs):
    """A real 256 MiB filesystem (tmpfs), mounted for the test; skipped where it cannot be."""
    return tmpfs("disk", "size=256m")


def _fill(disk: Path, leave_bytes: int) -> Path:
    """Take all of the disk's free space but ``leave_bytes``."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(1, shutil.disk_usage(disk).free - leave_bytes))
    return filler


def test_a_full_disk_while_writing_rows_is_one_line_and_resumes(small_disk, tmp_path):
    env = _env(tmp_path)
    args = ["eval", "--model", "builtin:tiny-qwen3", "--task", "arith", "--limit", "96", "--max-new-tokens", "16",
            "--batch-size", "16"]
    ref = subprocess.run(_aha(*args, "--out", str(tmp_path / "ref")), env=env, capture_output=True, text=True,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = small_disk / "ev"
    filler = _fill(small_disk, 6 * 4096)  # room (4 KiB pages) for part of the rows (10 KiB per 32 rows)
    full = subprocess.run(_aha(*args, "--out", str(out)), env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 2, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("aha: error: no space left on the device writing") and "re-run the same command" in last
    assert "Traceback" not in full.stderr
    kept = (out / "samples.jsonl").read_text().splitlines()
    assert 0 < len(kept) < 96 and all(json.loads(line) for line in kept)
    filler.unlink()  # space is back
    again = subprocess.run(_aha(*args, "--out", str(out)), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    got = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (tmp_path / "ref" / "samples.jsonl").read_text().splitlines()]
    assert got == want


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_resumes(small_disk, tmp_path):
    env = _env(tmp_path)
    run = small_disk / "run"
    args = ["run", "tiny-qwen3-smoke", "--out", str(run), "--set", "eval.enabled=false", "--set", "grpo.enabled=false",
            "--set", "sft.num_examples=8", "--set", "export.merged=false"]
    first = subprocess.run(_aha(*args, "--stop-after", "sft"), env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.rmtree(run / "sft")  # SFT again, now with no room for its checkpoints
    state = json.loads((run / "state.json").read_text())
    state["stages"].pop("sft")
    (run / "state.json").write_text(json.dumps(state))
    filler = _fill(small_disk, 256 * 1024)
    full = subprocess.run(_aha(*args), env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 2, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("aha: error: no space left on the device") and "Traceback" not in full.stderr
    filler.unlink()
    again = subprocess.run(_aha(*args), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "state.json").read_text())["stages"]["sft"]["steps"] == 2
