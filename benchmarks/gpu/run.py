"""The GPU checks, in three parts that each fit one device command (at most 540 s on one GPU):

    python benchmarks/gpu/run.py OUT --part 1     # the Unsloth backend, then the hf smoke recipe
    python benchmarks/gpu/run.py OUT --part 2     # speed and memory, side by side (hf backend, evaluation)
    python benchmarks/gpu/run.py OUT --part 3     # the unsloth backend's training speed and memory
    python benchmarks/gpu/run.py OUT --part 1 --cpu   # tiny sizes, no GPU (the tests run both parts so)

benchmarks/gpu/README.md has the carry list, the install line and the timeouts. Part 1:
  1. the machine: device, CUDA, the precision aha picks, package versions;
  2. the real UnslothBackend through `aha run` on a local random-weight Qwen3-shaped folder
     (load, SFT and GRPO steps with Unsloth's rollouts, evaluation with the adapter, the merged
     export and its verification in a fresh process);
  3. the smoke recipe end to end on the hf backend at the GPU's precision.
Part 2:
  4. training speed and peak GPU memory, aha's hf backend vs a hand-written TRL + PEFT script, SFT
     and GRPO, on a random-weight model with Qwen2.5-0.5B's configuration (benchmarks/train.py), and
     the same with the unsloth backend;
  5. evaluation throughput: batched HF generation vs the one-prompt loop (benchmarks/eval.py).

Each check runs in its own process group with a time limit; one that overruns is killed with
everything it started, and its log is kept. OUT/results.json and OUT/results.md are written
after every check, so a command cut short still returns what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PACKAGE_FOLDERS = {"formats": "formats", "rewards": "rewards", "eval": "eval", "recipes": "recipes"}
# Each part's checks and their limits in seconds (a part's total stays under 540 s with the machine's start-up).
# Unsloth compiles its kernels cold in every fresh process: its training comparison (four processes, two of them
# Unsloth's) has a part of its own.
PARTS = {1: {"unsloth_run": 380, "hf_smoke": 140}, 2: {"train_hf": 300, "eval": 200}, 3: {"train_unsloth": 500}}


def aha_on_path(out: Path) -> dict[str, str]:
    """Make ``import aha`` import this checkout's code without installing it (the device has no
    network to build it, and an installed copy may be older): a folder ``OUT/.aha/aha`` whose
    subfolders link to the repo's code folders, put first on this process's path and on every
    check's ``PYTHONPATH``."""
    site = out / ".aha"
    package = site / "aha"
    package.mkdir(parents=True, exist_ok=True)
    for name, folder in PACKAGE_FOLDERS.items():
        link = package / name
        if not link.exists():
            link.symlink_to(ROOT / folder, target_is_directory=True)
    sys.path.insert(0, str(site))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}


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
    import aha.recipes

    return {"device": torch.cuda.get_device_name(0) if cuda else "CPU", "cuda": torch.version.cuda if cuda else None,
            "aha_from": str(Path(aha.recipes.__file__).parent),
            "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
            "precision": resolve_dtype("auto"), "python": sys.version.split()[0], "packages": packages}


def run_check(name: str, command: list[str], out: Path, limit: float, env: dict[str, str] | None = None) -> dict:
    """Run ``command`` in a process group of its own, its output into ``OUT/<name>.log`` as it
    comes; past ``limit`` seconds the whole group is killed (workers, fresh processes and all)."""
    started = time.time()
    log = out / f"{name}.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                env={**(env or os.environ), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left running, on time or not
            except ProcessLookupError:
                pass
            proc.wait()
    if code is None:
        ok, error = False, f"stopped at its {limit:g} s limit; {log.name} has what it printed"
    else:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        ok, error = code == 0, None if code == 0 else (lines or ["(no message)"])[-1][:300]
    return {"ok": ok, "error": error, "seconds": round(time.time() - started, 1)}


def local_qwen3(out: Path, cpu: bool) -> Path:
    """A random-weight Qwen3-shaped folder with the real Qwen3 tokenizer (no download; speed and
    memory do not depend on the weights)."""
    from aha.recipes.training.models import build_tiny_qwen3

    folder = out / "qwen3-shape"
    if not (folder / "config.json").is_file():
        build_tiny_qwen3(folder, hidden_size=128 if cpu else 512, num_layers=2 if cpu else 4)
    return folder


def commands(part: int, out: Path, cpu: bool) -> dict[str, list[str] | str]:
    """Each check's command line, or the reason it is skipped."""
    aha = [sys.executable, "-m", "aha.recipes.cli", "run", "tiny-qwen3-smoke"]
    short = ["--set", "grpo.max_steps=2", "--set", "sft.num_examples=16"]
    if part == 1:
        unsloth = (aha + ["--out", str(out / "unsloth-run"), "--set", f"model.name={local_qwen3(out, cpu)}",
                          "--set", "model.backend=unsloth", "--set", "model.dtype=auto", *short]
                   if not cpu else "CPU mode: Unsloth needs a GPU")
        smoke = aha + ["--out", str(out / "hf-smoke"), "--set", "model.backend=hf", "--set",
                       f"model.dtype={'float32' if cpu else 'auto'}", *short]
        if cpu:  # the suite runs the smoke recipe end to end itself; here only that the check runs
            smoke += ["--stop-after", "eval-before"]
        return {"unsloth_run": unsloth, "hf_smoke": smoke}
    model = "tiny-qwen3" if cpu else "qwen2.5-0.5b-shape"
    steps, prompts, tokens = ("1", "8", "16") if cpu else ("10", "64", "256")
    train = [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--model", model, "--steps", steps]
    if part == 3:
        return {"train_unsloth": (train + ["--backend", "unsloth", "--json", str(out / "train_unsloth.json")]
                                  if not cpu else "CPU mode: Unsloth needs a GPU")}
    return {"train_hf": train + ["--json", str(out / "train_hf.json")],
            "eval": [sys.executable, str(ROOT / "benchmarks" / "eval.py"), "--model", model, "--n", prompts,
                     "--max-new-tokens", tokens, "--batch-size", prompts, "--json", str(out / "eval.json")]}


def attach_rows(results: dict, out: Path) -> None:
    """What each finished check wrote besides its log: benchmark rows, a run's stage times."""
    for name, check in results["checks"].items():
        rows = out / f"{name}.json"
        if rows.is_file():
            check["rows"] = json.loads(rows.read_text())
        for folder in ("unsloth-run", "hf-smoke"):
            state = out / folder / "state.json"
            if name == folder.replace("-", "_") and state.is_file():
                stages = json.loads(state.read_text())["stages"]
                check["stages"] = {k: v.get("seconds") for k, v in stages.items()}
                check["gpu_memory"] = {k: [v["peak_gpu_allocated_gib"], v.get("peak_gpu_reserved_gib")]
                                       for k, v in stages.items() if "peak_gpu_allocated_gib" in v}
                verification = out / folder / "export" / "verification.json"
                if verification.is_file():
                    check["verification"] = {k: {m: v.get(m) for m in ("problems", "identical_texts", "same_verdicts",
                                                                        "precision", "passed")}
                                             for k, v in json.loads(verification.read_text())["artifacts"].items()}


def write(results: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for results.md, results.json and each check's log")
    parser.add_argument("--part", type=int, choices=sorted(PARTS), required=True)
    parser.add_argument("--cpu", action="store_true", help="tiny sizes, no GPU needed (what the tests run)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = aha_on_path(out)
    results: dict = {"part": args.part, "mode": "cpu" if args.cpu else "gpu", "machine": machine(), "checks": {}}
    write(results, out)
    for name, command in commands(args.part, out, args.cpu).items():
        if isinstance(command, str):
            results["checks"][name] = {"ok": None, "error": command}
        else:
            results["checks"][name] = run_check(name, command, out, PARTS[args.part][name], env)
            attach_rows(results, out)
        write(results, out)
    print(markdown(results))
    return 0 if all(c["ok"] is not False for c in results["checks"].values()) else 1


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# GPU checks, part {r['part']} ({r['mode']} mode)", "", f"Device: {m['device']} (compute capability "
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
    for name, title in (("unsloth_run", "The unsloth backend through `aha run`"), ("hf_smoke", "The hf smoke recipe")):
        check = r["checks"].get(name, {})
        if check.get("stages"):
            lines += ["", f"## {title}", "", ", ".join(f"{k} {v} s" for k, v in check["stages"].items())]
        if check.get("gpu_memory"):
            lines += ["", "Peak GPU memory per stage, allocated / reserved (GiB): " + ", ".join(
                f"{k} {a} / {r}" for k, (a, r) in check["gpu_memory"].items())]
        for export, v in (check.get("verification") or {}).items():
            lines.append(f"- verify-export {export} ({v['precision']}): {v['identical_texts']} of {v['problems']} same "
                         f"text, {v['same_verdicts']} same verdict, {'passed' if v['passed'] else 'FAILED'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
