"""benchmarks/gpu/run.py, the one command a lent GPU machine runs, in its CPU mode (tiny
sizes): every check runs and lands in results.json and results.md, so the script cannot rot
between the rare sessions that have a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_runs_in_cpu_mode(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "run.py"), str(out), "--cpu"],
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "cpu" and results["machine"]["precision"] == "float32"
    assert results["machine"]["packages"]["trl"] and results["machine"]["packages"]["aha-recipes"]
    rows = results["checks"]["train_hf"]["rows"]
    assert {(r["stage"], r["way"]) for r in rows} == {("sft", "plain"), ("sft", "aha"), ("grpo", "plain"),
                                                        ("grpo", "aha")}
    assert all(r["seconds_per_step"] > 0 and r["peak_gib"] > 0 for r in rows)
    assert results["checks"]["train_unsloth"]["ok"] is None  # Unsloth needs a GPU: recorded as skipped
    ev = results["checks"]["eval"]["rows"]
    assert ev["batched_tokens"] > 0 and ev["loop_tokens"] > 0 and 0 <= ev["same_texts"] <= ev["prompts"]
    assert results["checks"]["smoke"]["ok"] is None  # CPU mode: the suite runs the smoke recipe itself
    text = (out / "results.md").read_text()
    assert "## Training (hf backend vs hand-written TRL + PEFT)" in text and "## Evaluation throughput" in text
