"""What the run is on, read where the recipe is checked and its TRL configs are built: the
machine's precision (THE precision rule), the processes of a launch, and whether the installed
trl / vllm are the versions the CPU weight-sync fix (``training/vllm_sync.py``) was verified
with. Nothing here imports the training stack."""

from __future__ import annotations

import os
from importlib import metadata


def precision(capability: tuple[int, int] | None) -> str:
    """THE precision rule, for the model's dtype and TRL's bf16/fp16 flags alike: bfloat16 on
    GPUs that have it (Ampere, compute capability 8.0, and newer), float16 on older ones
    (T4 7.5, V100 7.0), float32 on the CPU (``capability`` None).

    >>> precision((9, 0)), precision((8, 6)), precision((7, 5)), precision(None)
    ('bfloat16', 'bfloat16', 'float16', 'float32')
    """
    if capability is None:
        return "float32"
    return "bfloat16" if capability >= (8, 0) else "float16"


def device_capability() -> tuple[int, int] | None:
    import torch

    return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None  # type: ignore[return-value]


def resolve_dtype(name: str) -> str:
    """``auto`` -> :func:`precision` of this machine; else as named."""
    return precision(device_capability()) if name == "auto" else name


def world_size() -> int:
    """Processes in this launch (1 when not launched by accelerate or torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


CPU_SYNC_VERIFIED = {"trl": ("1.16",), "vllm": ("0.32",)}


def _version(dist: str) -> str:
    for name in (dist, f"{dist}-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return ""


def unverified_versions() -> list[str]:
    """The installed trl / vllm versions the CPU weight-sync fix was not verified with ("vllm 0.33.1")."""
    found = {name: _version(name) for name in CPU_SYNC_VERIFIED}
    return [f"{n} {v or 'missing'}" for n, v in found.items() if not v.startswith(CPU_SYNC_VERIFIED[n])]
