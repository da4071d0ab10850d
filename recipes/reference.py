"""``docs/reference.md``, written from the registries themselves: the shipped tasks (with their graders and sizes),
reward layers, formats, stages (with the files each writes) and every recipe key (from the schema, as
``recipe.schema.json`` is). ``python -m aha.recipes.reference > docs/reference.md`` rewrites it; a test keeps the
file equal to what this prints, so no table in the docs restates code by hand."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def tasks_table() -> list[str]:
    """The shipped tasks, one row each.

    >>> tasks_table()[2]
    '| `gsm8k` | 1,319 | numeric | with worked solutions | GSM8K test split (Cobbe et al. 2021; MIT) |'
    """
    from aha.eval.tasks import TASKS

    lines = [_row("task", "problems", "grader", "training rows", "source"), _row(*["---"] * 5)]
    for t in TASKS.values():
        size = "generated" if t.generated else f"{t.size:,}" if t.size else "?"
        training = ("with worked solutions" if t.solutions else "yes") if t.trains else "no"
        lines.append(_row(f"`{t.name}`", size, t.grader, training, t.source))
    return lines


def rewards_table() -> list[str]:
    from aha.rewards.registry import _PUBLISHED_BY_LAYER, LAYERS, reward_options

    lines = [_row("layer", "kind", "options", "published name", "what it scores"), _row(*["---"] * 5)]
    for name, layer in LAYERS.items():
        options = ", ".join(f"`{o}`" for o in reward_options(name)) or "none"
        lines.append(_row(f"`{name}`", layer.kind, options, f"`{_PUBLISHED_BY_LAYER[name]}`" if name in
                          _PUBLISHED_BY_LAYER else "", _first_line(layer.__doc__)))
    return lines


def formats_table() -> list[str]:
    from aha.formats.builtin import BUILTIN_FORMATS  # the shipped ones (a process may register its own)

    lines = [_row("format", "reasoning tags", "answer", "system prompt"), _row(*["---"] * 4)]
    for f in BUILTIN_FORMATS:
        tags = f"`{f.reasoning_start}` ... `{f.reasoning_end}`" if f.reasoning_start else "none"
        answer = {"tags": f"`{f.answer_start}` ... `{f.answer_end}`", "boxed": "last `\\boxed{}`",
                  "answer_line": "last `Answer:` line"}.get(f.answer_style, f.answer_style)
        lines.append(_row(f"`{f.name}`", tags, answer, (f.system_prompt or "none")[:120]))
    return lines


def stages_table() -> list[str]:
    from .stages.table import STAGES

    lines = [_row("stage", "what it does", "files it writes (in the run folder)"), _row(*["---"] * 3)]
    for s in STAGES:
        lines.append(_row(f"`{s.name}`", s.doc, ", ".join(f"`{w}`" for w in s.writes)))
    return lines


def recipe_keys_table() -> list[str]:
    from .config.schema import Recipe

    lines = [_row("key", "default", "what it is"), _row(*["---"] * 3)]

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            if f.metadata.get("derived") or "description" not in f.metadata:
                continue
            nested = _section(cls, f.name)
            if nested is not None:
                walk(nested, f"{prefix}{f.name}.")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(_row(f"`{prefix}{f.name}`", f"`{default!r}`", f.metadata["description"]))

    walk(Recipe, "")
    return lines


def _section(cls: type, name: str) -> type | None:
    """The dataclass a field of ``cls`` holds, if it is a section (not a value)."""
    import typing

    hint = typing.get_type_hints(cls).get(name)
    return hint if inspect.isclass(hint) and dataclasses.is_dataclass(hint) else None


def reference() -> str:
    parts = ["# Reference", "",
             "Written by `python -m aha.recipes.reference` from aha's registries (a test keeps it equal); edit the "
             "code, not this file.", "",
             "## Tasks (`aha eval --task`, `eval.tasks`, `data.task`)", "", *tasks_table(), "",
             "## Reward layers (`grpo.rewards`)", "", *rewards_table(), "",
             "## Formats (`format`)", "", *formats_table(), "",
             "## Stages (`aha run`, in order)", "", *stages_table(), "",
             "## Recipe keys", "",
             "The sft and grpo sections also take any field of TRL's SFTConfig and GRPOConfig.", "",
             *recipe_keys_table(), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference(), end="")
