"""Memory a stage used, for the log, state.json and the report: the process's peak resident memory
(host RAM) and, with CUDA, its peak GPU memory (allocated by tensors, reserved by torch's allocator,
vLLM's cache included); and the GPU memory still free before a fresh process loads a model."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("aha")


def reset_peak_memory() -> None:
    """Start measuring this process's peak resident memory afresh (Linux; elsewhere the peak
    stays the process's whole life)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_memory_gib() -> float:
    """This process's peak resident memory since :func:`reset_peak_memory` (GPU memory is the
    framework's to report)."""
    import resource

    try:
        with open("/proc/self/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 2**20, 2)


def reset_gpu_peaks() -> None:
    """Start this process's peak GPU memory afresh (nothing without CUDA, or before torch is imported)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def gpu_peaks() -> dict[str, float]:
    """This process's peak GPU memory since :func:`reset_gpu_peaks`, allocated (tensors) and reserved
    (what torch's allocator, vLLM's cache included, holds from the card), in GiB; empty without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    return {"peak_gpu_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def memory_line(peaks: dict[str, float]) -> str:
    """The log's memory figures for a stage.

    >>> memory_line({"peak_memory_gib": 3.5}), memory_line({"peak_memory_gib": 3.5, "peak_gpu_allocated_gib": 9.1,
    ...                                                      "peak_gpu_reserved_gib": 12.0})
    ('peak memory 3.50 GiB', 'peak memory 3.50 GiB; GPU 9.10 GiB allocated, 12.00 GiB reserved')
    """
    line = f"peak memory {peaks['peak_memory_gib']:.2f} GiB"
    if "peak_gpu_allocated_gib" in peaks:
        line += f"; GPU {peaks['peak_gpu_allocated_gib']:.2f} GiB allocated, {peaks['peak_gpu_reserved_gib']:.2f} GiB reserved"
    return line


def release_free_memory() -> None:
    """Between stages: collect the last stage's models and hand freed heap back to the system
    (glibc keeps it otherwise, so each stage's peak would stack on the last one's)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def gpu_free_before_fresh_process() -> dict[str, float]:
    """Free and total GPU memory, and what this process still holds, before a fresh process (verify-export's)
    loads a model (GiB; empty without CUDA). What this process still reserves then is a warning: the
    engine or the model was not released, and the fresh process may run out of memory."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    held = torch.cuda.memory_reserved()
    figures = {"gpu_free_gib": round(free / 2**30, 2), "gpu_total_gib": round(total / 2**30, 2),
               "gpu_held_by_run_gib": round(held / 2**30, 2)}
    log.info("GPU before the fresh process: %.2f of %.2f GiB free; this process holds %.2f GiB", *figures.values())
    if held > 2**30:
        log.warning("this process still holds %.2f GiB of the GPU before verify-export's fresh process loads the "
                    "model: the training engine was not fully released", held / 2**30)
    return figures
