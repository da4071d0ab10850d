"""GRPO's memory on the main job: the same 16 completions per optimizer step computed in one
batch (the plain way: per_device_train_batch_size 16) or in micro-batches with gradient
accumulation (per device 4 x 4 accumulation steps, what the main job uses), measured side
by side in one run.

    python benchmarks/memory.py                     # SmolLM2-135M (the main job's model), 4 steps each
    python benchmarks/memory.py --model tiny-qwen3 --steps 2 --splits 8x1,2x4

Each way runs in its own process with the main job's recipe values (lengths, sampling,
rewards, LoRA), on the same prompts: seconds per optimizer step (median after the first)
and the process's peak resident memory (GPU: the allocator's peak). TRL generates the
step's 16 completions at once either way; only the training forward and backward are
split, so the update is the same (the loss is normalised over the whole step's tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train import StepTimer, _callback, model_folder  # noqa: E402 - the training benchmark's helpers


def worker(model: str, per_device: int, accumulation: int, steps: int) -> dict:
    import torch

    from aha.formats import get_format
    from aha.recipes import load_recipe
    from aha.recipes.config.trl_args import completion_length
    from aha.recipes.training.data import grpo_rows, training_problems
    from aha.recipes.training.models import load_for_training, lora_config
    from aha.recipes.training.trainers import grpo_trainer

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="aha-mem-"))
    base = model_folder(model, Path(os.environ.get("AHA_BENCH_CACHE", work)))
    recipe = load_recipe("smollm2-135m-arith-cpu", {"model.name": base, "grpo.max_steps": steps,
                                                    "grpo.per_device_train_batch_size": per_device,
                                                    "grpo.gradient_accumulation_steps": accumulation,
                                                    "grpo.save_strategy": "no", "grpo.select": "all",
                                                    "grpo.preflight": "warn"})
    fmt = get_format(recipe.format)
    model, tokenizer = load_for_training(base, recipe.model)
    rows, longest = grpo_rows(recipe, fmt, tokenizer, training_problems(recipe, "grpo"))
    trainer, _ = grpo_trainer(recipe, model, tokenizer, fmt, rows, completion_length(recipe, longest), work,
                              peft_config=lora_config(recipe))
    timer = StepTimer()
    trainer.add_callback(_callback(timer))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"per_device": per_device, "accumulation": accumulation, "steps": len(timer.times),
            "seconds_per_step": statistics.median(timer.times[1:] or timer.times), "peak_gib": peak,
            "memory": "GPU allocated" if cuda else "process peak RSS"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="smollm2 (the main job's model), tiny-qwen3, or a folder")
    parser.add_argument("--steps", type=int, default=4, help="GRPO optimizer steps per way")
    parser.add_argument("--splits", default="16x1,4x4", help="per-device batch x accumulation steps, first = plain")
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.worker[0], args.worker[1], args.steps)))
        return 0
    env = {**os.environ, "AHA_BENCH_CACHE": tempfile.mkdtemp(prefix="aha-mem-model-"),
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    rows = []
    for split in args.splits.split(","):
        per_device, accumulation = (int(x) for x in split.lower().split("x"))
        done = subprocess.run([sys.executable, __file__, "--model", args.model, "--steps", str(args.steps),
                               "--worker", str(per_device), str(accumulation)], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    plain = rows[0]
    print(f"GRPO on {args.model}, {args.steps} steps per way, {plain['per_device'] * plain['accumulation']} completions "
          f"per optimizer step; memory = "
          f"{plain['memory']}")
    print(f"{'per device x accumulation':<27} {'s/step':>8} {'vs first':>9} {'peak GiB':>9} {'vs first':>9}")
    for r in rows:
        print(f"{r['per_device']:>3} x {r['accumulation']:<21} {r['seconds_per_step']:>8.2f} "
              f"{r['seconds_per_step'] / plain['seconds_per_step']:>8.2f}x {r['peak_gib']:>9.2f} "
              f"{r['peak_gib'] / plain['peak_gib']:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
