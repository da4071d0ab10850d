"""The ``aha`` command. Bad input ends in one clear line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


class UsageError(Exception):
    """A problem with what the user asked for: shown as one line, no traceback."""


def _read_text_arg(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        return path.read_text(encoding="utf-8")
    return value.encode("utf-8").decode("unicode_escape") if "\\n" in value else value


def cmd_rewards_explain(args: argparse.Namespace) -> int:
    from aha.rewards.explain import explain, format_table

    rows = explain(_read_text_arg(args.completion), answer=args.answer, format=args.format,
                   mode=args.mode, eos_token=args.eos_token, all_layers=args.all)
    print(format_table(rows))
    return 0


def cmd_rewards_list(args: argparse.Namespace) -> int:
    from aha.rewards import LAYERS, PUBLISHED_NAMES

    published = {v: k for k, v in PUBLISHED_NAMES.items()}
    for name, fn in LAYERS.items():
        first_line = (fn.__doc__ or "").strip().splitlines()[0]
        alias = f" (faithful name: {published[name]})" if name in published else ""
        print(f"{name}{alias}\n    {first_line}")
    return 0


def cmd_formats(args: argparse.Namespace) -> int:
    from aha.formats import FORMATS, get_format

    if args.name:
        fmt = get_format(args.name)
        print(f"name: {fmt.name}\nanswer style: {fmt.answer_style}\nprefill: {fmt.prefill!r}\n"
              f"enable_thinking: {fmt.enable_thinking}\nsystem prompt:\n  {fmt.system_prompt}\n"
              f"example completion:\n  {fmt.render_completion('17 + 17 = 34', '34')!r}")
        return 0
    for fmt in FORMATS.values():
        print(f"{fmt.name:<8} {fmt.render_response('...', 'N')!r}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from aha.eval import HFBackend, Sampling, VLLMBackend, evaluate, load_model, load_task
    from aha.formats import get_format

    fmt = get_format(args.format)  # check cheap arguments before any model loads
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, n=args.n, seed=args.seed)
    problems = load_task(args.task, path=args.data, limit=args.limit, seed=args.seed, level=args.level)
    adapters = args.adapter or [None]
    if args.backend == "hf" and len(adapters) > 1:
        raise UsageError("the hf backend takes one --adapter per run; use --backend vllm for several")
    meta = {"model": args.model, "task": args.task, "data": args.data, "limit": args.limit, "seed": args.seed}
    if args.backend == "vllm":
        backend = VLLMBackend(args.model, enable_lora=args.adapter is not None)
    for adapter in adapters:
        if args.backend == "hf":
            model, tokenizer = load_model(args.model, adapter=adapter, gguf_file=args.gguf_file)
            backend = HFBackend(model, tokenizer, batch_size=args.batch_size)
        out = Path(args.out) / (Path(adapter).name if adapter and len(adapters) > 1 else "")
        summary = evaluate(backend, problems, out, fmt, sampling,
                           adapter=adapter if args.backend == "vllm" else None, meta={**meta, "adapter": adapter})
        r = summary["results"]
        print(f"{adapter or args.model}: strict {r['accuracy_strict']:.1%}  lenient {r['accuracy_lenient']:.1%}  "
              f"math-verify {r['accuracy_math_verify']:.1%}  format {r['format_compliance']:.1%}  "
              f"truncated {r['truncation_rate']:.1%}  -> {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from aha.eval.compare import to_markdown, write_report

    report = write_report(args.before, args.after, args.out or args.after, metric=args.metric)
    print(to_markdown(report))
    return 0


def find_recipe(value: str) -> Path:
    """A recipe file path, or the name of a recipe shipped with aha (``smollm2-135m-arith-cpu``)."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = Path(__file__).parent / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in Path(__file__).parent.glob("*.yaml")))
    raise UsageError(f"no such recipe: {value} (shipped recipes: {known})")


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_recipe
    from .runner import plan, run_recipe

    path = find_recipe(args.recipe)
    recipe = load_recipe(path, args.set)  # every check happens here, before any model loads
    out = Path(args.out or Path("runs") / recipe.name)
    if args.dry_run:
        print(f"recipe {recipe.name} is valid; stages: {' -> '.join(plan(recipe))}; run directory: {out}")
        return 0
    state = run_recipe(recipe, out, recipe_dir=path.parent, stop_after=args.stop_after)
    print(f"run {recipe.name} finished: {out / 'report.md'}" if "report" in state["stages"] else
          f"run {recipe.name} stopped after {args.stop_after}; re-run the same command to continue")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aha", description="Reasoning recipes: formats, rewards, eval, GRPO.")
    sub = parser.add_subparsers(dest="command", required=True)

    rewards = sub.add_parser("rewards", help="inspect the reward layers").add_subparsers(dest="action", required=True)
    explain = rewards.add_parser("explain", help="score one completion with every layer and say why")
    explain.add_argument("completion", help="the completion text, @FILE to read it from a file, or - for stdin")
    explain.add_argument("--answer", help="the gold answer (GSM8K '#### N' answers are fine)")
    explain.add_argument("--format", default="unsloth", help="format name or YAML file (default: unsloth)")
    explain.add_argument("--mode", default="default", choices=["default", "faithful"])
    explain.add_argument("--eos-token", default="", help="the tokenizer's eos token (faithful Unsloth regex)")
    explain.add_argument("--all", action="store_true", help="every layer that applies, not just the recipe's")
    explain.set_defaults(func=cmd_rewards_explain)
    rewards.add_parser("list", help="list the reward layers").set_defaults(func=cmd_rewards_list)

    ev = sub.add_parser("eval", help="evaluate a model (and LoRA adapters) on a task")
    ev.add_argument("--model", required=True, help="local folder or hub id")
    ev.add_argument("--adapter", action="append", help="LoRA adapter folder (repeat for several with vllm)")
    ev.add_argument("--gguf-file", help="GGUF file name inside --model (hf backend)")
    ev.add_argument("--task", required=True, choices=["gsm8k", "dapo-math", "arith"])
    ev.add_argument("--data", help="local jsonl/parquet in the task's schema (default: the hub)")
    ev.add_argument("--format", default="unsloth")
    ev.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    ev.add_argument("--limit", type=_positive_int)
    ev.add_argument("--level", type=int, default=1, help="arith difficulty (1-3)")
    ev.add_argument("--max-new-tokens", type=_positive_int, default=512)
    ev.add_argument("--temperature", type=float, default=0.0)
    ev.add_argument("--n", type=_positive_int, default=1, help="samples per problem (pass@k, maj@k)")
    ev.add_argument("--batch-size", type=_positive_int, default=16)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", required=True, help="results folder (re-running resumes)")
    ev.set_defaults(func=cmd_eval)

    cmp = sub.add_parser("compare", help="paired before/after report of two eval runs")
    cmp.add_argument("before")
    cmp.add_argument("after")
    cmp.add_argument("--metric", default="lenient", choices=["strict", "lenient", "math_verify", "format_ok"])
    cmp.add_argument("--out", help="report folder (default: the AFTER folder)")
    cmp.set_defaults(func=cmd_compare)

    run = sub.add_parser("run", help="run a recipe: eval -> SFT -> GRPO -> eval -> compare -> export")
    run.add_argument("recipe", help="recipe YAML file, or the name of a shipped recipe")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a recipe value, e.g. --set grpo.max_steps=5 (repeatable)")
    run.add_argument("--out", help="run directory (default: runs/<recipe name>); re-running resumes")
    run.add_argument("--dry-run", action="store_true", help="validate the recipe and print the stages")
    run.add_argument("--stop-after", help="stop after this stage (re-run to continue)")
    run.set_defaults(func=cmd_run)

    formats = sub.add_parser("formats", help="list the reasoning formats, or show one")
    formats.add_argument("name", nargs="?")
    formats.set_defaults(func=cmd_formats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (UsageError, ValueError, FileNotFoundError, OSError) as err:
        print(f"aha: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aha: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
