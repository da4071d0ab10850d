"""`aha run` under `accelerate launch` or `torchrun`: one recipe, N processes.

Training stages (SFT, GRPO) run on every process, through TRL and accelerate (DDP,
DeepSpeed or FSDP, whatever the launch configured). Everything else (evaluations, the
preflight, comparison, export, the report) runs once, on the main process, while the
others wait. Only the main process writes the run folder's state, log and adapters.

The processes learn how a main-process step went through one broadcast, so an error on
the main process ends every process with the same message instead of leaving the others
waiting for a barrier that never comes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

from ..config.machine import is_main, world_size

T = TypeVar("T")


def _state() -> Any:
    from datetime import timedelta

    from accelerate import PartialState

    # The others wait while the main process evaluates: give that hours, not the default 30 minutes.
    return PartialState(timeout=timedelta(hours=6))


@contextmanager
def whole_models():
    """Models loaded inside load whole, never partitioned by DeepSpeed ZeRO-3. A step that
    runs on the main process alone (evaluation, the preflight, export) must not make
    ZeRO-3's collective calls, which the other processes would never answer."""
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    ref = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)  # what TrainingArguments registered
    config = ref() if ref is not None else None
    if config is None or not hf_deepspeed.is_deepspeed_zero3_enabled():
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def on_main(step: Callable[[], T]) -> T | None:
    """Run ``step`` on the main process only (its models whole: :func:`whole_models`); every
    process returns after it finished. An exception on the main process is raised there and
    reported on the others.

    >>> on_main(lambda: 42)  # a single process is the main one
    42
    """
    if world_size() == 1:
        return step()
    import torch.distributed as dist

    _state()
    outcome: list[Any] = [None]
    error: BaseException | None = None
    result = None
    if is_main():
        try:
            with whole_models():
                result = step()
        except BaseException as err:  # noqa: BLE001 - the others must hear of it, then it is raised here
            error = err
            outcome = [f"{type(err).__name__}: {err}"]
    dist.broadcast_object_list(outcome, src=0)
    if error is not None:
        raise error
    if outcome[0] is not None:
        raise MainProcessFailed(f"the main process stopped: {outcome[0]}")
    return result


class MainProcessFailed(RuntimeError):
    """Raised on the other processes when the main process's step failed."""
