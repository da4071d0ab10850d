"""A CPU-only fix for TRL's vLLM colocate weight sync.

On CPU, vLLM's linear layers repack each weight into a private copy and leave an empty
``layer.weight`` behind, so TRL's per-parameter ``model.load_weights`` fails ("'Parameter'
object has no attribute 'weight_loader'") and rollouts could never see the trained LoRA.
vLLM's own in-place reload does the repacking itself, so on CPU we route TRL's sync
through it. The fix is installed only on CPU and only for the versions it was verified
with; ``tests/test_vllm.py`` checks after each sync that vLLM's log-probs equal the
training model's, so "vLLM silently generates with stale weights" cannot come back.
"""

from __future__ import annotations

from ..config.machine import unverified_versions

def sync_weights_in_place(self) -> None:
    """Replacement for ``VLLMGeneration.sync_weights`` in CPU colocate mode."""
    runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=self._iter_named_params(), is_checkpoint_format=True)
    self.llm.reset_prefix_cache()


def install_cpu_weight_sync() -> bool:
    """Install the fix when it applies (CPU, verified versions); True when installed.
    Recipe validation refuses unverified versions first (``check_vllm_available``)."""
    import torch

    if torch.cuda.is_available():
        return False  # TRL's own sync works on CUDA
    unverified = unverified_versions()
    if unverified:
        raise RuntimeError(f"vLLM rollouts on CPU are verified only with trl 1.16 and vllm(-cpu) 0.32; found "
                           f"{', '.join(unverified)}. Set model.use_vllm: false to use HF generation.")
    from trl.generation import vllm_generation

    original = vllm_generation.VLLMGeneration.sync_weights
    if getattr(original, "__wrapped__", None) is not None:  # installed already
        return True

    def sync_weights(self) -> None:
        if self.mode == "colocate" and not self.enable_sleep_mode:
            sync_weights_in_place(self)
        else:
            original(self)

    sync_weights.__wrapped__ = original  # type: ignore[attr-defined]
    vllm_generation.VLLMGeneration.sync_weights = sync_weights
    return True
