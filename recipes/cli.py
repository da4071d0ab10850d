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

    formats = sub.add_parser("formats", help="list the reasoning formats, or show one")
    formats.add_argument("name", nargs="?")
    formats.set_defaults(func=cmd_formats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"aha: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aha: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
