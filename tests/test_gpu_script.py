"""benchmarks/gpu/run.py, the commands a lent GPU machine runs, in their CPU mode (tiny sizes):
each part's checks run and land in results.json and results.md, results are written after
every check, and a check that overruns is killed with everything it started, its log kept. So
the script cannot rot between the rare sessions that have a GPU."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_check_that_overruns_is_killed_with_its_children(tmp_path):
    """The check starts a child (as training workers and verify-export's fresh process are) and
    outlives its limit: both are gone afterwards, and what it printed is in its log."""
    child = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
             " print('child', p.pid, flush=True); time.sleep(120)")
    result = _script().run_check("slow", [sys.executable, "-c", child], tmp_path, 3)
    assert result["ok"] is False and result["error"].startswith("stopped at its 3 s limit; slow.log has")
    pid = int((tmp_path / "slow.log").read_text().split()[1])
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), "the check's child outlived the kill"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "gone"


@pytest.mark.slow
def test_part_2_in_cpu_mode_writes_results_after_each_check(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--part", "2", "--cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    seen_early = None
    while proc.poll() is None:
        if (out / "eval.log").exists() and seen_early is None:  # the last check has started
            seen_early = json.loads((out / "results.json").read_text())["checks"]
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert seen_early and seen_early["train_hf"]["ok"] is True and "eval" not in seen_early
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "cpu" and results["part"] == 2 and results["machine"]["precision"] == "float32"
    assert results["machine"]["packages"]["trl"] and results["machine"]["packages"]["aha-recipes"]
    rows = results["checks"]["train_hf"]["rows"]
    assert {(r["stage"], r["way"]) for r in rows} == {("sft", "plain"), ("sft", "aha"), ("grpo", "plain"),
                                                        ("grpo", "aha")}
    assert all(r["seconds_per_step"] > 0 and r["peak_gib"] > 0 for r in rows)
    assert "train_unsloth" not in results["checks"]  # part 3's, alone: four fresh processes compile Unsloth cold
    ev = results["checks"]["eval"]["rows"]
    assert ev["batched_tokens"] > 0 and ev["loop_tokens"] > 0 and 0 <= ev["same_texts"] <= ev["prompts"]
    text = (out / "results.md").read_text()
    assert "## Training (hf backend vs hand-written TRL + PEFT)" in text and "## Evaluation throughput" in text


@pytest.mark.slow
def test_part_1_in_cpu_mode_runs_this_checkouts_code(tmp_path):
    """As on the device, where aha is not installed: the script puts this checkout's code first on
    the path itself, for its own process and every check's."""
    out = tmp_path / "gpu"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--part", "1", "--cpu"], capture_output=True,
                          text=True, timeout=900, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert Path(results["machine"]["aha_from"]).resolve() == (ROOT / "recipes").resolve()
    assert Path(results["machine"]["aha_from"]).parent.parent == out / ".aha"
    assert results["checks"]["unsloth_run"]["ok"] is None
    assert results["checks"]["hf_smoke"]["ok"] is True and "eval-before" in results["checks"]["hf_smoke"]["stages"]


def test_a_check_cut_short_still_returns_the_rows_it_wrote(tmp_path):
    """benchmarks/train.py writes its rows after each worker: a check stopped at its limit after its first
    worker still returns that row in results.json and results.md; part 3 (Unsloth's training comparison,
    four cold compiles) is skipped on a CPU and recorded so."""
    script = _script()
    row = {"way": "plain", "stage": "sft", "steps": 3, "seconds_per_step": 0.5, "peak_gib": 2.0,
           "memory": "GPU allocated", "device": "NVIDIA H100"}
    (tmp_path / "train_unsloth.json").write_text(json.dumps([row]))
    results = {"part": 3, "mode": "gpu", "machine": {"device": "NVIDIA H100", "capability": [9, 0], "cuda": "13.0",
                                                     "python": "3.12", "precision": "bfloat16", "packages": {}},
               "checks": {"train_unsloth": {"ok": False, "error": "stopped at its 500 s limit", "seconds": 500}}}
    script.attach_rows(results, tmp_path)
    assert results["checks"]["train_unsloth"]["rows"] == [row]
    assert "| sft | plain | 0.500 | 2.00 | 1.00x |" in script.markdown(results)
    assert script.commands(3, tmp_path, cpu=True) == {"train_unsloth": "CPU mode: Unsloth needs a GPU"}
    assert sum(script.PARTS[3].values()) <= 540 and all(sum(p.values()) <= 540 for p in script.PARTS.values())
