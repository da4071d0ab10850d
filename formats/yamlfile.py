"""The one YAML reader of aha: recipes, task files and format files are all read as YAML 1.2 (two booleans,
``true`` and ``false``; ``off`` and ``no`` are words), and a value that holds itself or expands past any real
file's size (an alias bomb) is refused before anything walks it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

MAX_VALUES = 200_000  # values a file may expand to through its aliases (no recipe, task or format comes near)


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader with YAML 1.2's core schema for plain scalars: booleans are true and
    false only, ``5e-6`` is a number, ``012`` is twelve, ``2026-12-07`` stays text."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] not in {"bool", "int", "float",
                                                                                   "timestamp"}]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _int12(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = node.value.lower()
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    base = {"0o": 8, "0x": 16}.get(digits[:2], 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                    list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _int12)


def parse_yaml(text: str) -> Any:
    """YAML 1.2 text as Python values; a syntax error is PyYAML's ``YAMLError``, a value that holds itself, is
    nested too deep or expands past ``MAX_VALUES`` (aliases) an InputError.

    >>> parse_yaml("[off, true, 5e-6, 012, 0x1f, 2026-12-07, .nan]")[:6]
    ['off', True, 5e-06, 12, 31, '2026-12-07']
    >>> parse_yaml("{a: &x [1, 2], b: *x}")  # a shared alias is fine
    {'a': [1, 2], 'b': [1, 2]}
    >>> parse_yaml("a: &x [1, *x]")
    Traceback (most recent call last):
    ...
    aha.formats.errors.InputError: a YAML alias refers to its own anchor (a value that holds itself); write the value out
    """
    try:
        value = yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
        _expanded_size(value, set(), {})
    except RecursionError:
        raise InputError("YAML nested too deep to be read") from None
    return value


def _expanded_size(value: Any, inside: set[int], sizes: dict[int, int]) -> int:
    """How many values ``value`` holds once its aliases are written out (each shared value counted once per use,
    computed once): a cycle or a total past ``MAX_VALUES`` is refused without walking the expansion."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in inside:
        raise InputError("a YAML alias refers to its own anchor (a value that holds itself); write the value out")
    if key not in sizes:
        inside.add(key)
        items = list(value.values()) if isinstance(value, dict) else value
        sizes[key] = 1 + sum(_expanded_size(item, inside, sizes) for item in items)
        inside.discard(key)
        if sizes[key] > MAX_VALUES:
            raise InputError(f"the YAML expands to more than {MAX_VALUES:,} values through its aliases (an alias "
                             "bomb?); write the values out")
    return sizes[key]


def read_yaml(path: str | Path, what: str) -> Any:
    """The values in a YAML file; any problem is one line naming the file (``what`` says what it should be)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text, so not a {what}") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be read as a {what} ({err.strerror or type(err).__name__})") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
