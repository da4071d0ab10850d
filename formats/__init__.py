"""Reasoning formats: tags, system prompt, prefill, SFT rendering, answer extraction.

>>> from aha.formats import get_format
>>> fmt = get_format("unsloth")
>>> completion = fmt.render_completion("17 + 17 = 34", "34")
>>> completion
'17 + 17 = 34<end_working_out><SOLUTION>34</SOLUTION>'
>>> fmt.extract_answer(completion), fmt.check_format(completion)
('34', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .answers import answers_equal, answers_match, clean_answer, find_last_boxed, gold_from_gsm8k, last_number, parse_number
from .builtin import BUILTIN_FORMATS
from .errors import InputError
from .format import Format
from .paths import user_path

FORMATS: dict[str, Format] = {f.name: f for f in BUILTIN_FORMATS}
_FIELDS = set(Format.__dataclass_fields__)


def register_format(fmt: Format, overwrite: bool = False) -> Format:
    """Add a user format to the registry so recipes can name it."""
    if fmt.name in FORMATS and not overwrite:
        raise InputError(f"format {fmt.name!r} already exists (pass overwrite=True to replace it)")
    FORMATS[fmt.name] = fmt
    return fmt


def format_from_dict(spec: dict[str, Any]) -> Format:
    """Build a format from a mapping (e.g. a YAML recipe's ``format:`` section).

    If ``template`` is missing it is made from the tags:
    ``reasoning_start{reasoning}reasoning_end answer_start{answer}answer_end``.

    >>> f = format_from_dict({"name": "mine", "system_prompt": "Use the tags.",
    ...     "reasoning_start": "<why>", "reasoning_end": "</why>",
    ...     "answer_start": "<ans>", "answer_end": "</ans>"})
    >>> f.render_response("because", "5")
    '<why>because</why>\\n<ans>5</ans>'
    """
    if not isinstance(spec, dict):
        raise InputError(f"a format must be a mapping, not {type(spec).__name__}")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise InputError(f"unknown format field(s) {unknown}; known: {sorted(_FIELDS)}")
    spec = dict(spec)
    if "template" not in spec:
        spec["template"] = (
            f"{spec.get('reasoning_start', '')}{{reasoning}}{spec.get('reasoning_end', '')}\n"
            f"{spec.get('answer_start', '')}{{answer}}{spec.get('answer_end', '')}"
        )
    for key, value in spec.items():
        wanted = _FIELD_TYPES.get(key, str)
        if key == "eos_tokens":
            if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) and t for t in value):
                raise InputError(f"format field eos_tokens must be a list of strings, not {value!r}"[:160])
            spec[key] = tuple(value)
        elif not isinstance(value, wanted) or isinstance(value, bool) and wanted is str:
            raise InputError(f"format field {key} must be {_TYPE_NAMES[wanted]}, not {type(value).__name__} "
                             f"{value!r}"[:160])
    try:
        fmt = Format(**spec)
    except TypeError as err:  # e.g. a missing name/system_prompt
        raise InputError(f"bad format: {err}") from None
    # A format must read back what it writes, or every reward and grade built on it is wrong.
    example = fmt.render_completion("17 + 17 = 34", "34")
    if not fmt.check_format(example) or fmt.extract_answer(example) != "34":
        raise InputError(f"format {fmt.name!r} does not read back its own example completion {example!r}: "
                         "its tags overlap or one contains another")
    return fmt


_FIELD_TYPES: dict[str, Any] = {"enable_thinking": (bool, type(None))}
_TYPE_NAMES: dict[Any, str] = {str: "a string", (bool, type(None)): "true, false or null"}


def load_format(path: str | Path) -> Format:
    """Read a format from a YAML file; any problem with it is one ValueError naming the file."""
    from .yamlfile import read_yaml

    try:
        spec = read_yaml(path, "format file")
    except InputError as err:
        raise InputError(f"format file {err}" if str(err).startswith(str(path)) else str(err)) from None
    try:
        return format_from_dict(spec)
    except ValueError as err:
        raise InputError(f"format file {path}: {err}") from None


def get_format(spec: str | Format | dict[str, Any]) -> Format:
    """A format by registry name, YAML path, mapping, or the object itself."""
    if isinstance(spec, Format):
        return spec
    if isinstance(spec, dict):
        return format_from_dict(spec)
    if isinstance(spec, str):
        if spec in FORMATS:
            return FORMATS[spec]
        if spec.endswith((".yaml", ".yml")) and Path(spec).is_file():
            return load_format(spec)
    raise InputError(f"unknown format {spec!r}; built in: {', '.join(FORMATS)} (or a YAML file / mapping)")


__all__ = [
    "FORMATS", "Format", "InputError", "answers_equal", "answers_match", "clean_answer", "find_last_boxed", "format_from_dict",
    "get_format", "gold_from_gsm8k", "last_number", "load_format", "parse_number", "register_format", "user_path",
]
