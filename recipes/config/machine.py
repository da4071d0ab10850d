"""What the run is on, read where the recipe is checked and its TRL configs are built: the
machine's precision (THE precision rule), which training backend runs (THE backend rule) and
whether vLLM can serve, the processes of a launch, and whether the installed trl / vllm are
the versions the CPU weight-sync fix (``training/vllm_sync.py``) was verified with. Where a
model runs is :func:`aha.eval.backends.model_device` (evaluation needs it and cannot import
recipes). Nothing here imports the training stack."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .schema import ModelConfig

log = logging.getLogger("aha")


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


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


@dataclass(frozen=True)
class BackendAbilities:
    """What a training backend can do. Validation reads these fields; nothing else asks a
    backend's name what it can do."""

    name: str
    needs_cuda: bool  # runs only on a CUDA GPU
    load_in_4bit: bool  # trains a 4-bit (QLoRA) model
    gguf: bool  # exports GGUF (Unsloth's saver, converting with llama.cpp)
    vllm_server: bool  # GRPO rollouts from a separate `aha vllm-serve` (TRL's server mode)
    float32: bool  # trains a float32 model at float32 (Unsloth trains it under 16-bit autocast)
    float16_on_bfloat16_gpu: bool  # trains a float16 model on a GPU whose best precision is bfloat16
    kl_reference: str  # what GRPO's KL term is measured against after the SFT warmup


TRL_KL_REFERENCE = "the warmup's adapter"  # TRL's GRPOTrainer, on a model that starts from the warmup's adapter
BACKENDS: dict[str, BackendAbilities] = {b.name: b for b in (
    BackendAbilities("hf", needs_cuda=False, load_in_4bit=False, gguf=False, vllm_server=True, float32=True,
                     float16_on_bfloat16_gpu=True, kl_reference=TRL_KL_REFERENCE),
    BackendAbilities("unsloth", needs_cuda=True, load_in_4bit=True, gguf=True, vllm_server=False, float32=False,
                     float16_on_bfloat16_gpu=False, kl_reference="the base model"),
)}


def backends_that(ability: str) -> str:
    """The backends with ``ability``, for messages.

    >>> backends_that("gguf"), backends_that("vllm_server")
    ('unsloth', 'hf')
    """
    return " or ".join(b.name for b in BACKENDS.values() if getattr(b, ability))


NVIDIA_DRIVER_FILE = "/proc/driver/nvidia/version"  # Linux: the loaded NVIDIA kernel module says its version here
NVIDIA_DEVICE = "/dev/nvidiactl"  # present where this process may use an NVIDIA GPU (not in a container without one)
CUDA_DRIVER_MINIMUM = {13: 580, 12: 525, 11: 450}  # NVIDIA's minimum Linux driver for each CUDA major version


def nvidia_driver() -> str | None:
    """The loaded NVIDIA driver's version ("550.54.15"), None where there is none."""
    import re

    try:
        with open(NVIDIA_DRIVER_FILE, encoding="utf-8") as fh:
            found = re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", fh.read())
    except OSError:
        return None
    return found.group(1) if found else None


def gpu_unusable() -> str | None:
    """Why a CUDA build of torch cannot see the NVIDIA GPU this process may use (None: it can, or there is no
    such GPU, or it is hidden on purpose with CUDA_VISIBLE_DEVICES, or torch is a CPU build, chosen by
    whoever installed it). Most often a torch built for a CUDA newer than the driver: the GPU install's
    torch 2.13.0 is a CUDA 13 build, which needs driver 580; every run would quietly become a CPU run."""
    import torch

    built = torch.version.cuda
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    driver = nvidia_driver()
    if not built or hidden or driver is None or not os.path.exists(NVIDIA_DEVICE) or torch.cuda.is_available():
        return None
    need = CUDA_DRIVER_MINIMUM.get(int(built.split(".")[0]))
    if need and int(driver.split(".")[0]) < need:
        return (f"this machine has an NVIDIA GPU (driver {driver}), but torch {torch.__version__} is built for CUDA "
                f"{built}, which needs driver {need} or newer, so CUDA is invisible; update the driver, or install a "
                "torch built for an older CUDA (CUDA_VISIBLE_DEVICES= runs on the CPU on purpose)")
    return (f"this machine has an NVIDIA GPU (driver {driver}), but torch {torch.__version__} (built for CUDA {built}) "
            "cannot use it; check the install (CUDA_VISIBLE_DEVICES= runs on the CPU on purpose)")


def has_unsloth() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def unsloth_can_run() -> bool:
    """This machine has a CUDA GPU and unsloth installed (whether the model suits it is
    :func:`aha.recipes.config.schema.unsloth_refusal`'s to say)."""
    return device_capability() is not None and has_unsloth()


def vllm_problem() -> str | None:
    """Why vLLM cannot serve on this machine (None when it can): not installed, or installed
    and switched off by Unsloth as it was imported (its ``VLLM_DISABLED_REASON``: a vLLM built
    for another torch or transformers)."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    fixes = sys.modules.get("unsloth.import_fixes")
    reason = getattr(fixes, "VLLM_DISABLED_REASON", None)
    if reason:
        return f"Unsloth switched vLLM off ({str(reason).strip().splitlines()[0][:160]})"
    return None


def choose_backend(requested: str, model: ModelConfig | None = None) -> tuple[str, str]:
    """THE backend rule: (backend, why). ``auto`` -> unsloth when this machine has CUDA and
    unsloth and Unsloth can load the model (:func:`aha.recipes.config.schema.unsloth_refusal`),
    else hf. ``unsloth`` where it cannot run is refused in one line (RecipeError).

    >>> choose_backend("hf")
    ('hf', 'as the recipe asks')
    """
    from .schema import RecipeError, unsloth_refusal

    cuda = device_capability() is not None
    invisible = None if cuda else gpu_unusable()
    if invisible:  # the run would silently become a CPU run
        raise RecipeError(f"model.backend {requested}: {invisible}")
    if requested == "hf":
        return "hf", "as the recipe asks"
    unsloth = has_unsloth()
    refusal = unsloth_refusal(model) if model is not None else None
    if requested == "auto":
        if unsloth_can_run() and not refusal:
            return "unsloth", f"auto: a CUDA GPU ({gpu_name()}) and unsloth are here"
        return "hf", "auto: " + ("this machine has no CUDA GPU" if not cuda else "unsloth is not installed"
                                 if not unsloth else str(refusal))
    if refusal:
        raise RecipeError(refusal)
    if not cuda:
        raise RecipeError("model.backend unsloth needs a CUDA GPU and this machine has none; "
                          "use model.backend: hf (or auto)")
    if not unsloth:
        raise RecipeError("model.backend unsloth needs unsloth: pip install 'aha-recipes[unsloth]'")
    return "unsloth", "as the recipe asks"


def pick_backend(requested: str, model: ModelConfig | None = None) -> str:
    """The backend :func:`choose_backend` picks (without its reason)."""
    return choose_backend(requested, model)[0]


def dtype_problem(dtype: str, backend: str) -> str | None:
    """Why ``model.dtype`` (resolved) cannot train on this machine with ``backend`` (None when it
    can): bfloat16 on a GPU without it (before Ampere); a precision the backend would not train
    at as recorded (:class:`BackendAbilities`: Unsloth trains a float32 model under 16-bit
    autocast, and its trainer refuses float16 on a bfloat16 GPU), so the run would record one
    precision and train another."""
    capability = device_capability()
    if capability is None:
        return None
    best = precision(capability)
    gpu = f"this GPU ({gpu_name()}, compute capability {capability[0]}.{capability[1]})"
    if dtype == "bfloat16" and best != "bfloat16":
        return f"model.dtype bfloat16: {gpu} has no bfloat16; use model.dtype auto ({best} here)"
    can = BACKENDS[backend]
    if dtype == "float32" and not can.float32:
        return (f"model.dtype float32 with backend {backend}: it trains a float32 model under {best} autocast, so "
                f"the run would record float32 and train at {best}; use model.dtype auto, or backend "
                f"{backends_that('float32')} for float32")
    if dtype == "float16" and best == "bfloat16" and not can.float16_on_bfloat16_gpu:
        return (f"model.dtype float16 with backend {backend} on {gpu}: it trains at the GPU's bfloat16; use "
                f"model.dtype auto, or backend {backends_that('float16_on_bfloat16_gpu')} for float16")
    return None


LLAMA_CPP_VARIABLE = "UNSLOTH_LLAMA_CPP_PATH"  # where Unsloth's GGUF saver looks for llama.cpp (unsloth_zoo.llama_cpp)


def llama_cpp_problem() -> str | None:
    """``export.gguf`` on Unsloth converts with llama.cpp (its ``llama-quantize`` and
    ``convert_hf_to_gguf.py``) from the folder ``UNSLOTH_LLAMA_CPP_PATH`` names (default
    ``~/.unsloth/llama.cpp``), downloading and building it when it is not there. Offline
    (``HF_HUB_OFFLINE=1``) that would fail after all the training: say so now (None: fine)."""
    from pathlib import Path

    folder = Path(os.environ.get(LLAMA_CPP_VARIABLE) or Path.home() / ".unsloth" / "llama.cpp").expanduser()
    tools = [folder / "llama-quantize", folder / "convert_hf_to_gguf.py"]
    if all(t.is_file() for t in tools):
        return None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return (f"export.gguf: Unsloth converts to GGUF with llama.cpp, which is not in {folder} (no "
                f"{' or '.join(t.name for t in tools if not t.is_file())}), and HF_HUB_OFFLINE=1 says this machine "
                f"is offline, so Unsloth could not fetch it after training; build llama.cpp and set {LLAMA_CPP_VARIABLE} "
                "to its folder, or drop export.gguf")
    log.info("export.gguf: no llama.cpp in %s; Unsloth will download and build it at the export", folder)
    return None


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
