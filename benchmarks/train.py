"""Training speed and memory: aha's training stages against a hand-written TRL + PEFT
script with the same model, data and settings, measured side by side in one run.

    python benchmarks/train.py                         # tiny Qwen3, CPU: a few SFT and GRPO steps each way
    python benchmarks/train.py --model smollm2 --steps 3
    python benchmarks/train.py --backend unsloth --model unsloth/Qwen3-1.7B   # a CUDA GPU: Unsloth vs plain

Each way runs in its own process (so its peak memory is its own): seconds per step (median
over the steps after the first, which pays one-off costs) and peak memory (GPU: the
allocator's peak; CPU: the process's peak resident set). aha's stage should cost no more
than the plain script (target: <= 1.05x per step).
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
import time
from pathlib import Path

SETTINGS = {"learning_rate": 1e-4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
            "warmup_steps": 0, "weight_decay": 0.0, "lr_scheduler_type": "linear", "logging_steps": 1,
            "save_strategy": "no", "gradient_checkpointing": False, "report_to": "none"}
GRPO_SETTINGS = {"num_generations": 4, "max_completion_length": 32, "temperature": 1.0, "top_p": 1.0, "min_p": 0.0,
                 "loss_type": "dapo", "beta": 0.0, "scale_rewards": "group"}
LORA = {"r": 16, "alpha": 32, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def model_folder(name: str, work: Path) -> str:
    from aha.recipes.config.schema import ModelConfig
    from aha.recipes.training.models import prepare_base

    if name in ("tiny-qwen3", "smollm2"):
        builtin = {"tiny-qwen3": "builtin:tiny-qwen3", "smollm2": "builtin:smollm2-135m-instruct"}[name]
        return prepare_base(ModelConfig(name=builtin), work)
    if name == "qwen2.5-0.5b-shape":
        from aha.recipes.training.models import build_qwen25_05b_shape

        folder = work / "qwen2.5-0.5b-shape"
        if not (folder / "config.json").is_file():
            build_qwen25_05b_shape(folder)
        return str(folder)
    return name


def data(tokenizer, n: int):
    from aha.eval.tasks import make_arith
    from aha.formats import get_format

    fmt = get_format("unsloth")
    problems = make_arith(n, level=1, seed=11)
    sft = [{"prompt": fmt.build_prompt(tokenizer, p.question), "completion": fmt.render_completion(p.solution, p.answer)}
           for p in problems]
    grpo = [{"prompt": fmt.build_prompt(tokenizer, p.question), "answer": p.answer, "id": p.id} for p in problems]
    return fmt, sft, grpo


class StepTimer:
    """Wall time of each optimizer step (a TrainerCallback, duck-typed to keep imports late)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, *args, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, *args, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def _callback(timer: StepTimer):
    from transformers import TrainerCallback

    class Callback(TrainerCallback):
        def on_step_begin(self, *a, **k):
            timer.on_step_begin()

        def on_step_end(self, *a, **k):
            timer.on_step_end()

    return Callback()


def worker(way: str, stage: str, model_name: str, steps: int, backend: str) -> dict:
    if backend == "unsloth" and way == "aha":
        import unsloth  # noqa: F401 - before TRL, as `aha run` does, so Unsloth's config and trainer patches apply
    import torch

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="aha-bench-"))
    base = model_folder(model_name, Path(os.environ.get("AHA_BENCH_CACHE", work)))
    cuda = torch.cuda.is_available()
    timer = StepTimer()
    if way == "aha":
        trainer = aha_trainer(stage, base, steps, work, backend)
    else:
        trainer = plain_trainer(stage, base, steps, work)
    trainer.add_callback(_callback(timer))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"way": way, "stage": stage, "steps": len(timer.times), "seconds_per_step": statistics.median(timer.times[1:]
            or timer.times), "peak_gib": peak, "memory": "GPU allocated" if cuda else "process RSS",
            "device": torch.cuda.get_device_name(0) if cuda else "CPU"}


def _recipe(stage: str, base: str, steps: int, backend: str):
    from aha.recipes.config.load import recipe_from_dict

    grpo = {**SETTINGS, **GRPO_SETTINGS, "max_steps": steps}
    grpo.pop("report_to")
    sft = {**SETTINGS, "max_steps": steps, "completion_only_loss": True}
    sft.pop("report_to")
    return recipe_from_dict({"name": "bench", "model": {"name": base, "backend": backend, "max_seq_length": 512},
                             "lora": LORA, "sft": {**sft, "max_tokens": 256}, "grpo": grpo,
                             "eval": {"enabled": False}})


def aha_trainer(stage: str, base: str, steps: int, work: Path, backend: str):
    """aha's own path: the recipe, the training backend `aha run` builds (the real UnslothBackend
    or HFTrainBackend), our trainer builders."""
    from aha.recipes.config.trl_args import completion_length
    from aha.recipes.training.backends import make_backend
    from aha.recipes.training.trainers import grpo_trainer, sft_trainer

    recipe = _recipe(stage, base, steps, backend)
    made = make_backend(recipe, work)
    model, tokenizer, peft_config = made.training_model(None)
    fmt, sft_rows, grpo_rows = data(tokenizer, 64)
    if stage == "sft":
        return sft_trainer(recipe, model, tokenizer, sft_rows, work, peft_config=peft_config)
    trainer, _ = grpo_trainer(recipe, model, tokenizer, fmt, grpo_rows, completion_length(recipe, 200), work,
                              peft_config=peft_config, **made.rollout_args())
    return trainer


def plain_trainer(stage: str, base: str, steps: int, work: Path):
    """What a user writes by hand with TRL + PEFT, with the same values."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from aha.rewards import get_reward

    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if torch.cuda.get_device_capability(0) >= (8, 0) else torch.float16) if cuda else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
    fmt, sft_rows, grpo_rows = data(tokenizer, 64)
    precision = {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16, "use_cpu": not cuda}
    if stage == "sft":
        args = SFTConfig(output_dir=str(work / "plain"), max_steps=steps, max_length=256, completion_only_loss=True,
                         seed=3407, **SETTINGS, **precision)
        return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_rows), processing_class=tokenizer,
                          peft_config=lora)
    names = ("format_exact", "format_approximate", "check_answer_numeric", "check_number")
    args = GRPOConfig(output_dir=str(work / "plain"), max_steps=steps, seed=3407, reward_weights=[1.0] * 4,
                      **SETTINGS, **GRPO_SETTINGS, **precision)
    return GRPOTrainer(model=model, reward_funcs=[get_reward(n, format=fmt) for n in names], args=args,
                       train_dataset=Dataset.from_list(grpo_rows), processing_class=tokenizer, peft_config=lora)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen3", help="tiny-qwen3, smollm2, qwen2.5-0.5b-shape (random weights, "
                        "Qwen2.5-0.5B's configuration), or a model folder / hub id")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per stage and way")
    parser.add_argument("--backend", default="hf", choices=["hf", "unsloth"])
    parser.add_argument("--stages", default="sft,grpo")
    parser.add_argument("--worker", nargs=2, metavar=("WAY", "STAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.model, args.steps, args.backend)))
        return 0
    cache = tempfile.mkdtemp(prefix="aha-bench-model-")  # one prepared model folder shared by every worker
    env = {**os.environ, "AHA_BENCH_CACHE": cache, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    rows = []
    for stage in args.stages.split(","):
        for way in ("plain", "aha"):
            done = subprocess.run([sys.executable, __file__, "--model", args.model, "--steps", str(args.steps),
                                   "--backend", args.backend, "--worker", way, stage],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if args.json:  # after each worker: a run cut short by its time limit still returns what it measured
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
    label = {"plain": "hand-written TRL + PEFT", "aha": f"aha ({args.backend} backend)"}
    print(f"model {args.model}, {args.steps} steps per stage and way, device {rows[0]['device']}, "
          f"memory = {rows[0]['memory']}")
    print(f"{'stage':<6} {'way':<26} {'s/step':>8} {'peak GiB':>9} {'vs plain':>9}")
    for stage in args.stages.split(","):
        plain = next(r for r in rows if r["stage"] == stage and r["way"] == "plain")
        for r in (x for x in rows if x["stage"] == stage):
            ratio = r["seconds_per_step"] / plain["seconds_per_step"]
            print(f"{stage:<6} {label[r['way']]:<26} {r['seconds_per_step']:>8.3f} {r['peak_gib']:>9.2f} {ratio:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
