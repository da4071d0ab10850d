"""Reading the files aha is handed or left behind (data, results, summaries, fingerprints,
adapter configs, run state), in one place: whatever is wrong with a file ends in one
``InputError`` that names the file, says what is wrong and what to do, never a traceback
from a parser. And writing them so that a kill never leaves half a file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aha.formats import InputError

REMAKE = "it was not written by aha, or was cut short; delete it to have it made again"


def read_text(path: str | Path, hint: str = REMAKE) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text ({hint})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a folder, not a file") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: not readable (permission denied)") from None


def read_json(path: str | Path, hint: str = REMAKE, kind: type | None = dict) -> Any:
    """The JSON value in ``path`` (of type ``kind``, when given).

    >>> import tempfile, os
    >>> bad = os.path.join(tempfile.mkdtemp(), "state.json")
    >>> _ = open(bad, "w").write('{"stages": ')
    >>> try:
    ...     read_json(bad)
    ... except InputError as err:
    ...     print(str(err).split(": ", 1)[1])
    not valid JSON (Expecting value at line 1, column 12; it was not written by aha, or was cut short; delete it to have it made again)
    """
    text = read_text(path, hint)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}; {hint})") from None
    if kind is not None and not isinstance(value, kind):
        raise InputError(f"{path}: expected a JSON {kind.__name__}, found {type(value).__name__} ({hint})")
    return value


def read_parquet(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Parquet file."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or give a .jsonl file") from None
    try:
        return pq.read_table(str(path)).to_pylist()
    except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise InputError(f"{path}: not a readable Parquet file ({first}); give a valid .parquet or a .jsonl file") \
            from None


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as JSON atomically: readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
