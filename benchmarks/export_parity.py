"""Does the merged export answer as the evaluated adapter did? Side by side, in one run: the
run's final adapter on its base model (the model its evaluation measured), and the same adapter
merged into the base and saved at each precision asked for (bfloat16 was aha's default until
2026-12-03; the default now is the precision the run evaluated at), each loaded from disk as a
user loads it and asked the first N problems of the run's first evaluation task, greedy, with
the run's format, lengths and batch size.

    python benchmarks/export_parity.py runs/smollm2-135m-arith-cpu      # the main job's run folder
    python benchmarks/export_parity.py RUN --problems 50 --dtypes bfloat16,float32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder (aha run ... --out RUN)")
    parser.add_argument("--problems", type=int, default=50, help="the first N problems of the first evaluation task")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="the precisions to save the merged weights at")
    args = parser.parse_args()

    from aha.eval import HFBackend, Sampling, evaluate, load_model
    from aha.eval.runner import SAMPLES_FILE, read_done
    from aha.formats import get_format
    from aha.eval.files import read_text
    from aha.recipes.config.load import as_today, recipe_from_dict
    from aha.recipes.config.machine import resolve_dtype
    from aha.recipes.config.schema import resolve_path
    from aha.recipes.stages.table import final_adapter
    from aha.recipes.stages.verify import compare_answers
    from aha.recipes.training.data import eval_problems
    from aha.recipes.training.export import merge_adapter

    run = Path(args.run)
    recipe = recipe_from_dict(as_today(yaml.safe_load(read_text(run / "recipe.yaml"))), base_dir=run)  # as run
    base = str(run / "base") if (run / "base" / "config.json").is_file() else recipe.model.name
    adapter = final_adapter(run, recipe)
    task, problems = next(iter(eval_problems(recipe).items()))
    problems = problems[: args.problems]
    ids = [p.id for p in problems]
    fmt = get_format(resolve_path(recipe.format, run))
    sampling = Sampling(max_new_tokens=recipe.eval.max_new_tokens)
    evaluated = resolve_dtype(recipe.model.dtype)

    def answers(model: str, adapter_dir: str | None, out: Path) -> tuple[dict, float]:
        started = time.time()
        lm, tokenizer = load_model(model, adapter=adapter_dir, dtype=evaluated)
        evaluate(HFBackend(lm, tokenizer, batch_size=recipe.eval.batch_size), problems, out, format=fmt,
                 sampling=sampling, progress=False)
        return read_done(out / SAMPLES_FILE), time.time() - started

    with tempfile.TemporaryDirectory() as tmp:
        reference, seconds = answers(base, adapter, Path(tmp) / "adapter")
        rows = [("the evaluated adapter (base + LoRA)", evaluated, compare_answers(reference, reference, ids), seconds)]
        for dtype in args.dtypes.split(","):
            merged = merge_adapter(base, adapter, Path(tmp) / f"merged-{dtype}", dtype)
            exported, seconds = answers(str(merged), None, Path(tmp) / f"eval-{dtype}")
            rows.append((f"merged, saved at {dtype}", evaluated, compare_answers(reference, exported, ids), seconds))

    print(f"{run}: the first {len(problems)} problems of {task}, greedy, {recipe.eval.max_new_tokens} new tokens, "
          f"every model run at {evaluated}\n")
    print("| export | same text as the adapter | same verdict | strict (export) | strict (adapter) | seconds |")
    print("|---|---|---|---|---|---|")
    for name, _, r, seconds in rows:
        print(f"| {name} | {r['identical_texts']} / {r['problems']} | {r['same_verdicts']} / {r['problems']} | "
              f"{r['strict_export']:.1%} | {r['strict_adapter']:.1%} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
