"""THE rule for a file a user names in a recipe, a task file or a reward reference: relative to
the working directory where it is there, else to the folder of the file that names it. Formats,
tasks, reward functions and recipes all read user files this way (this is the lowest layer)."""

from __future__ import annotations

from pathlib import Path


def user_path(value: str | Path, base_dir: str | Path | None) -> Path:
    """``value`` (``~`` expanded) where it exists as written, else under ``base_dir`` where it exists
    there; what is found nowhere comes back as written, for the caller to name as missing.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "rows.jsonl").write_text("{}")
    >>> user_path("rows.jsonl", folder) == folder / "rows.jsonl", user_path("nowhere.jsonl", folder)
    (True, PosixPath('nowhere.jsonl'))
    """
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or base_dir is None:
        return path
    candidate = Path(base_dir) / path
    return candidate if candidate.exists() else path
