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
    text = read_text(path, hint).removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}; {hint})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deep to read ({hint})") from None
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
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err


LOCK_FILE = ".aha.lock"


class FolderLock:
    """One writer per folder: the process that holds it is the only one writing there, for
    its whole life. The lock is the operating system's (``flock``), so it is released at any
    exit, ``kill -9`` included; the file keeps the holder's pid, so a second process can say
    who holds it, and a lock left by a killed process is taken over (``taken_over`` names it).

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with FolderLock(folder) as held:
    ...     try:
    ...         FolderLock(folder).acquire()
    ...     except InputError as err:
    ...         print(str(err).split(" (")[0].endswith("is in use by another aha process"))
    True
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.fd: int | None = None
        self.taken_over: int | None = None  # pid of a dead holder whose lock this one took over

    def acquire(self) -> FolderLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(f"{self.folder} is in use by another aha process (pid {holder}): wait for it to end, "
                             "or write somewhere else with --out") from None
        previous = os.read(fd, 32).decode(errors="replace").strip()
        if previous.isdigit() and int(previous) != os.getpid():
            self.taken_over = int(previous)  # it held the lock and died without releasing it: kill -9, a crash
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        os.ftruncate(self.fd, 0)  # a clean exit leaves no holder behind
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
