"""Every GPU check in one command: what the lent GPU machine has 15 minutes for.

    python benchmarks/gpu/run.py OUT            # on one CUDA GPU, under 8 minutes
    python benchmarks/gpu/run.py OUT --cpu      # tiny sizes, no smoke run (the tests run this)

Writes OUT/results.md and OUT/results.json:
  1. the machine: device, torch, CUDA, the precision aha picks, package versions;
  2. training speed and peak GPU memory, aha's hf backend vs a hand-written TRL + PEFT script,
     SFT and GRPO, on a random-weight model with Qwen2.5-0.5B's configuration and the real
     Qwen tokenizer (benchmarks/train.py); the same with the unsloth backend when Unsloth imports;
  3. evaluation throughput: batched HF generation vs the one-prompt loop, tokens/s, same
     problems, and how many answers are the same text both ways (benchmarks/eval.py);
  4. the smoke recipe end to end with the hf backend (bf16 on Ampere and newer: adapters, report).
Each check runs in its own process with a time limit; one that fails is recorded, not fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def machine() -> dict:
    import importlib.metadata as md

    import torch

    from aha.recipes.config.machine import resolve_dtype

    packages = {}
    for name in ("aha-recipes", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify",
                 "unsloth", "unsloth_zoo", "bitsandbytes", "vllm"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if cuda else "CPU", "cuda": torch.version.cuda if cuda else None,
            "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
            "precision": resolve_dtype("auto"), "python": sys.version.split()[0], "packages": packages}


def _run(name: str, command: list[str], out: Path, limit: int) -> dict:
    started = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, cwd=ROOT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        (out / f"{name}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr[-20000:])
        ok = done.returncode == 0
        error = None if ok else (done.stderr.strip().splitlines() or ["(no message)"])[-1][:300]
    except subprocess.TimeoutExpired:
        ok, error = False, f"stopped at its {limit} s limit"
    return {"ok": ok, "error": error, "seconds": round(time.time() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for results.md, results.json and each check's log")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes, no GPU needed (what the tests run)")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = "tiny-qwen3" if args.cpu else "qwen2.5-0.5b-shape"
    steps, prompts, tokens = ("1", "8", "16") if args.cpu else ("10", "64", "256")
    results: dict = {"mode": "cpu" if args.cpu else "gpu", "machine": machine(), "checks": {}}
    train = [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--model", model, "--steps", steps]
    results["checks"]["train_hf"] = {**_run("train_hf", train + ["--json", str(out / "train_hf.json")], out, 300)}
    if results["machine"]["packages"]["unsloth"] and not args.cpu:
        results["checks"]["train_unsloth"] = _run("train_unsloth", train + ["--backend", "unsloth", "--json", str(
            out / "train_unsloth.json")], out, 300)
    else:
        results["checks"]["train_unsloth"] = {"ok": None, "error": "unsloth not installed" if not args.cpu else
                                              "CPU mode: Unsloth needs a GPU"}
    results["checks"]["eval"] = _run("eval", [sys.executable, str(ROOT / "benchmarks" / "eval.py"), "--model", model,
                                              "--n", prompts, "--max-new-tokens", tokens, "--batch-size", prompts,
                                              "--json", str(out / "eval.json")], out, 300)
    if args.cpu:  # the test suite runs the smoke recipe end to end itself
        results["checks"]["smoke"] = {"ok": None, "error": "CPU mode: the test suite runs the smoke recipe"}
    else:  # the GPU's own precision: bf16 on Ampere and newer
        smoke = [sys.executable, "-m", "aha.recipes.cli", "run", "tiny-qwen3-smoke", "--out", str(out / "smoke"),
                 "--set", "model.backend=hf", "--set", "model.dtype=auto"]
        results["checks"]["smoke"] = _run("smoke", smoke, out, 420)
    for name, file in (("train_hf", "train_hf.json"), ("train_unsloth", "train_unsloth.json"), ("eval", "eval.json")):
        if (out / file).is_file():
            results["checks"][name]["rows"] = json.loads((out / file).read_text())
    if (out / "smoke" / "state.json").is_file():
        state = json.loads((out / "smoke" / "state.json").read_text())
        results["checks"]["smoke"]["stages"] = {k: v.get("seconds") for k, v in state["stages"].items()}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if all(c["ok"] is not False for c in results["checks"].values()) else 1


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# GPU checks ({r['mode']} mode)", "", f"Device: {m['device']} (compute capability "
             f"{'.'.join(map(str, m['capability'])) if m['capability'] else '-'}), CUDA {m['cuda']}, Python "
             f"{m['python']}; aha picks {m['precision']}.", "",
             "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v), ""]
    for name, check in r["checks"].items():
        status = "ok" if check["ok"] else ("skipped" if check["ok"] is None else "FAILED")
        lines.append(f"- {name}: {status} ({check.get('seconds', 0)} s){': ' + check['error'] if check.get('error') else ''}")
    for name in ("train_hf", "train_unsloth"):
        rows = r["checks"].get(name, {}).get("rows")
        if rows:
            lines += ["", f"## Training ({name.split('_')[1]} backend vs hand-written TRL + PEFT)", "",
                      "| stage | way | s/step | peak GiB | vs plain |", "|---|---|---|---|---|"]
            for row in rows:
                plain = next(x for x in rows if x["stage"] == row["stage"] and x["way"] == "plain")
                lines.append(f"| {row['stage']} | {row['way']} | {row['seconds_per_step']:.3f} | {row['peak_gib']:.2f} "
                             f"| {row['seconds_per_step'] / plain['seconds_per_step']:.2f}x |")
    ev = r["checks"].get("eval", {}).get("rows")
    if ev:
        lines += ["", "## Evaluation throughput", "", f"{ev['prompts']} GSM8K prompts, greedy, {ev['max_new_tokens']} "
                  f"new tokens: batched (batch {ev['batch_size']}) {ev['batched_tokens'] / ev['batched_seconds']:.1f} "
                  f"tokens/s vs one at a time {ev['loop_tokens'] / ev['loop_seconds']:.1f} tokens/s "
                  f"({(ev['batched_tokens'] / ev['batched_seconds']) / (ev['loop_tokens'] / ev['loop_seconds']):.1f}x); "
                  f"{ev['same_texts']} of {ev['prompts']} answers the same text both ways."]
    stages = r["checks"].get("smoke", {}).get("stages")
    if stages:
        lines += ["", "## The smoke recipe end to end (hf backend)", "", ", ".join(f"{k} {v} s" for k, v in stages.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
