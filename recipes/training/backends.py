"""Training backends: what differs between transformers + PEFT + TRL (``hf``, anywhere)
and Unsloth (``unsloth``, CUDA): loading the model to train, generating for evaluation
and the preflight, GRPO's rollout engine, and the exporters. The stages themselves are
written once, in ``aha.recipes.stages``.

- ``hf``: evaluation through aha's batched HF generation, or through one vLLM engine when
  ``model.use_vllm`` is set (GRPO rollouts then run on TRL's vLLM colocate or server mode).
- ``unsloth``: FastLanguageModel, with its vLLM engine (fast_inference) where vLLM can serve;
  evaluation goes through that same engine with the trained LoRA named in every request, or
  without vLLM through aha's batched HF generation on Unsloth's model.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any, Protocol

from aha.eval.backends import Generator

from ..config.machine import choose_backend, resolve_dtype
from ..config.schema import Recipe, RecipeError
from .models import load_for_training, lora_config, prepare_base

log = logging.getLogger("aha")


class TrainingBackend(Protocol):
    """What the stages need from a backend (HFTrainBackend, UnslothBackend)."""

    name: str

    def generator(self, adapter: str | None) -> Generator:
        """A generator bound to ``adapter`` (``None``: the base model)."""

    def training_model(self, adapter: str | None) -> tuple[Any, Any, Any]:
        """(model, tokenizer, peft_config) to train, starting from ``adapter`` (trainable) or,
        with ``None``, from a fresh LoRA (``peft_config`` set when the trainer must add it)."""

    def rollout_args(self) -> dict[str, Any]:
        """GRPOConfig's rollout fields for this backend (use_vllm, vllm_mode, ...)."""

    def trained(self, adapter: Path) -> None:
        """Training saved ``adapter``; the model in memory now holds its weights."""

    def merge(self, adapter: str, out: Path) -> Path: ...

    def gguf(self, adapter: str, out: Path, quantization: str) -> Path: ...

    def close(self) -> None: ...


def make_backend(recipe: Recipe, run_dir: Path) -> TrainingBackend:
    name, why = choose_backend(recipe.model.backend, recipe.model)
    log.info("backend: %s (%s)", name, why)
    if name == "unsloth":
        from .unsloth_backend import UnslothBackend

        return UnslothBackend(recipe)
    return HFTrainBackend(recipe, run_dir)


class HFTrainBackend:
    name = "hf"

    def __init__(self, recipe: Recipe, run_dir: Path):
        self.recipe = recipe
        self.base = prepare_base(recipe.model, run_dir)
        self._vllm: Any = None

    def generator(self, adapter: str | None) -> Generator:
        from aha.eval import HFBackend, VLLMBackend, load_model
        from aha.eval.backends import AdapterBound, vllm_lora_rank

        if self.recipe.model.use_vllm:
            if self._vllm is None:
                self._vllm = VLLMBackend(self.base, max_lora_rank=vllm_lora_rank([self.recipe.lora.r]),
                                         dtype=resolve_dtype(self.recipe.model.dtype),
                                         max_model_len=self.recipe.model.max_seq_length, enforce_eager=True)
            return AdapterBound(self._vllm, adapter)  # a longer evaluation is refused, never cut (check_lengths)
        model, tokenizer = load_model(self.base, adapter=adapter, dtype=resolve_dtype(self.recipe.model.dtype))
        return HFBackend(model, tokenizer, batch_size=self.recipe.eval.batch_size)

    def _free_engine(self) -> None:
        if self._vllm is not None:  # training next: give back the evaluation engine's memory
            self._vllm.close()
            self._vllm = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def training_model(self, adapter: str | None) -> tuple[Any, Any, Any]:
        self._free_engine()
        model, tokenizer = load_for_training(self.base, self.recipe.model, adapter=adapter)
        return model, tokenizer, None if adapter else lora_config(self.recipe)

    def rollout_args(self) -> dict[str, Any]:
        m = self.recipe.model
        if not m.use_vllm:
            return {}
        if m.vllm_mode == "server":  # rollouts from `aha vllm-serve RECIPE`, started beside this run
            return {"use_vllm": True, "vllm_mode": "server", "vllm_server_host": m.vllm_server_host,
                    "vllm_server_port": m.vllm_server_port}
        from aha.eval.backends import size_vllm_for_cpu

        from .vllm_sync import install_cpu_weight_sync

        size_vllm_for_cpu(self.base, m.max_seq_length)  # TRL starts its engine itself
        if install_cpu_weight_sync():
            log.info("vLLM on CPU: TRL's weight sync goes through vLLM's in-place reload")
        return {"use_vllm": True, "vllm_mode": "colocate"}

    def trained(self, adapter: Path) -> None:
        return None  # the next stage loads what it needs from disk

    def merge(self, adapter: str, out: Path) -> Path:
        from .export import merge_adapter

        return merge_adapter(self.base, adapter, out, resolve_dtype(self.recipe.model.dtype))

    def gguf(self, adapter: str, out: Path, quantization: str) -> Path:
        raise RecipeError("export.gguf needs backend unsloth (its GGUF saver); use export.merged with the hf backend")

    def close(self) -> None:
        self._free_engine()
