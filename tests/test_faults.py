"""Faults: the smoke recipe killed with SIGKILL in every stage and re-run each time ends
with exactly what an uninterrupted run gives; a second writer is refused while the first
runs; a full disk while writing evaluation rows or a checkpoint ends in one line and the
same command resumes once space is back (a real small filesystem, tmpfs, where the
machine lets root mount one)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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


# Where to kill, in stage order, decided by events in the run itself, not by timing: the child process is the
# real ``aha run`` with one of aha's or transformers' functions wrapped so that, at the kill point, it says so
# (a marker file) and waits to be killed; the test kills it when the marker appears, whatever the machine's load.
_PAUSE = """
import os, sys, time
from pathlib import Path
point, marker = os.environ["KILL_POINT"], Path(os.environ["KILL_MARKER"])

def pause():
    marker.write_text(point)
    time.sleep(3600)  # killed here

def after(module, name, when):
    original = getattr(module, name)
    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        if when(*args, **kwargs):
            pause()
        return out
    setattr(module, name, wrapped)

kind, _, where = point.partition(":")
if kind == "rows":  # an evaluation stage has written its first chunk of rows
    import aha.eval.runner as runner
    after(runner, "_append_rows", lambda fd, path, rows: Path(path).parent.parent.name == where)
elif kind == "checkpoint":  # a trainer has saved checkpoint 2 of its stage
    from transformers.trainer_callback import CallbackHandler
    after(CallbackHandler, "on_save", lambda self, args, state, control:
          state.global_step == 2 and Path(args.output_dir).parent.name == where)
elif kind == "preflight":  # the preflight has written its report; its stage is not yet recorded
    import aha.recipes.training.preflight as preflight
    after(preflight, "write_json", lambda path, value, *a, **k: Path(path).name == preflight.PREFLIGHT_FILE)
elif kind == "merged":  # the merged weights are written, their tokenizer not yet
    from transformers import PreTrainedModel
    after(PreTrainedModel, "save_pretrained", lambda self, folder, *a, **k: Path(folder).name == "merged")
from aha.recipes.cli import main
sys.exit(main())
"""
KILL_POINTS = ["rows:eval-before", "checkpoint:sft", "rows:eval-after-sft", "preflight:", "checkpoint:grpo",
               "rows:eval-after", "merged:"]


def test_killed_in_every_stage_ends_as_an_uninterrupted_run(tmp_path):
    env = _env(tmp_path)
    ref, run, marker = tmp_path / "ref", tmp_path / "run", tmp_path / "reached"
    done = subprocess.run(_aha("run", *SMOKE, "--out", str(ref)), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    refused_once = False
    for point in KILL_POINTS:
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", _PAUSE, "run", *SMOKE, "--out", str(run)],
                                env={**env, "KILL_POINT": point, "KILL_MARKER": str(marker)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while not marker.is_file() and proc.poll() is None:  # the event, or the run ending without it
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended without reaching the kill point: {point}"
        if not refused_once:  # a second writer, while the first one runs
            second = subprocess.run(_aha("run", *SMOKE, "--out", str(run)), env=env, capture_output=True, text=True,
                                    timeout=300)
            assert second.returncode == 2 and f"is in use by another aha process (pid {proc.pid})" in second.stderr
            refused_once = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
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
