"""Training backends. Each offers the same five things to the runner: a generator for an
adapter (evaluation), sft, grpo, export, close.

- ``hf``: transformers + PEFT + TRL, anywhere (CPU included). Evaluation through our
  batched HF generation, or through one vLLM engine when ``model.use_vllm`` is set.
- ``unsloth``: FastLanguageModel with its vLLM engine (fast_inference); evaluation goes
  through that same engine with the trained LoRA named in every request.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from aha.formats import Format

from .config import Recipe
from .data import grpo_rows, sft_rows, training_problems
from .models import pick_backend, prepare_base

log = logging.getLogger("aha")


def make_backend(recipe: Recipe, run: Any, fmt: Format) -> Any:
    name = pick_backend(recipe.model.backend)
    log.info("backend: %s", name)
    if name == "unsloth":
        from .unsloth_backend import UnslothBackend

        return UnslothBackend(recipe, run, fmt)
    return HFTrainBackend(recipe, run, fmt)


class HFTrainBackend:
    name = "hf"

    def __init__(self, recipe: Recipe, run: Any, fmt: Format):
        self.recipe, self.run, self.fmt = recipe, run, fmt
        self.base = prepare_base(recipe.model, run.dir)
        self._vllm: Any = None
        self._problems: dict[str, list] = {}

    def problems(self, stage: str) -> list:
        if stage not in self._problems:
            self._problems[stage] = training_problems(self.recipe, stage)
        return self._problems[stage]

    def _eval_dtype(self) -> str:
        import torch

        if self.recipe.model.dtype != "auto":
            return self.recipe.model.dtype
        return "bfloat16" if torch.cuda.is_available() else "float32"

    def generator(self, adapter: str | None) -> Any:
        from aha.eval import HFBackend, VLLMBackend, load_model

        if self.recipe.model.use_vllm:
            if self._vllm is None:
                self._vllm = VLLMBackend(self.base, max_lora_rank=max(8, self.recipe.lora.r), dtype=self._eval_dtype(),
                                         max_model_len=self.recipe.model.max_seq_length, enforce_eager=True)
            return self._vllm
        model, tokenizer = load_model(self.base, adapter=adapter, dtype=self._eval_dtype())
        return HFBackend(model, tokenizer, batch_size=self.recipe.eval.batch_size)

    def _free_engine(self) -> None:
        if self._vllm is not None:  # training next: give back the evaluation engine's memory
            self._vllm.close()
            self._vllm = None
            gc.collect()

    def sft(self, out_dir: Path) -> dict[str, Any]:
        from .train import run_sft

        self._free_engine()
        return run_sft(self.recipe, self.base, self.fmt,
                       lambda tok: sft_rows(self.recipe, self.fmt, tok, self.problems("sft")), out_dir)

    def grpo(self, out_dir: Path, sft_adapter: str | None) -> dict[str, Any]:
        from .train import run_grpo

        self._free_engine()
        return run_grpo(self.recipe, self.base, self.fmt,
                        lambda tok: grpo_rows(self.recipe, self.fmt, tok, self.problems("grpo")), out_dir, sft_adapter)

    def export(self, adapter: str, out_dir: Path) -> dict[str, Any]:
        from .export import export

        return export(self.recipe, self.base, adapter, out_dir)

    def close(self) -> None:
        self._free_engine()
