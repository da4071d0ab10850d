"""Training backends. Each offers the same five things to the runner: a generator for an
adapter (evaluation), sft, grpo, export, close.

Both also run the GRPO preflight (``preflight``) through their generator.

- ``hf``: transformers + PEFT + TRL, anywhere (CPU included). Evaluation through our
  batched HF generation, or through one vLLM engine when ``model.use_vllm`` is set.
- ``unsloth``: FastLanguageModel with its vLLM engine (fast_inference); evaluation goes
  through that same engine with the trained LoRA named in every request.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any, Protocol

from aha.eval.backends import Generator
from aha.formats import Format

from .schema import Recipe
from .data import grpo_rows, sft_rows, training_problems
from .models import load_for_training, lora_config, pick_backend, prepare_base, resolve_dtype

log = logging.getLogger("aha")


class TrainingBackend(Protocol):
    """What the runner needs from a backend (HFTrainBackend, UnslothBackend); the runner
    depends on this and nothing else. Stage methods return what goes into state.json."""

    name: str

    def generator(self, adapter: str | None) -> Generator:
        """A generator bound to ``adapter`` (``None``: the base model)."""

    def sft(self, out_dir: Path) -> dict[str, Any]: ...

    def preflight(self, out_dir: Path, start_adapter: str | None) -> dict[str, Any]: ...

    def grpo(self, out_dir: Path, sft_adapter: str | None, selected_from: Path | None = None) -> dict[str, Any]: ...

    def export(self, adapter: str, out_dir: Path) -> dict[str, Any]: ...

    def close(self) -> None: ...


def make_backend(recipe: Recipe, run: Any, fmt: Format) -> TrainingBackend:
    name = pick_backend(recipe.model.backend, recipe.model)
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

    def generator(self, adapter: str | None) -> Generator:
        from aha.eval import HFBackend, VLLMBackend, load_model
        from aha.eval.backends import AdapterBound, vllm_lora_rank

        if self.recipe.model.use_vllm:
            if self._vllm is None:
                self._vllm = VLLMBackend(self.base, max_lora_rank=vllm_lora_rank([self.recipe.lora.r]), dtype=resolve_dtype(self.recipe.model.dtype),
                                         max_model_len=self.recipe.model.max_seq_length, enforce_eager=True)
            return AdapterBound(self._vllm, adapter)
        model, tokenizer = load_model(self.base, adapter=adapter, dtype=resolve_dtype(self.recipe.model.dtype))
        return HFBackend(model, tokenizer, batch_size=self.recipe.eval.batch_size)

    def _free_engine(self) -> None:
        if self._vllm is not None:  # training next: give back the evaluation engine's memory
            self._vllm.close()
            self._vllm = None
            gc.collect()

    def sft(self, out_dir: Path) -> dict[str, Any]:
        from .train import sft_trainer, train_and_save

        self._free_engine()
        model, tokenizer = load_for_training(self.base, self.recipe.model)
        rows = sft_rows(self.recipe, self.fmt, tokenizer, self.problems("sft"))
        trainer = sft_trainer(self.recipe, model, tokenizer, rows, out_dir, peft_config=lora_config(self.recipe))
        return {"examples": len(rows), **train_and_save(trainer, out_dir)}

    def preflight(self, out_dir: Path, start_adapter: str | None) -> dict[str, Any]:
        from .preflight import preflight_stage

        generator = self.generator(start_adapter)
        return preflight_stage(self.recipe, self.fmt, generator, self.problems("grpo"), out_dir)

    def grpo(self, out_dir: Path, sft_adapter: str | None, selected_from: Path | None = None) -> dict[str, Any]:
        """On top of the SFT adapter (loaded trainable), else on a fresh LoRA."""
        from .preflight import selected_rows
        from .train import grpo_trainer, train_and_save

        self._free_engine()
        model, tokenizer = load_for_training(self.base, self.recipe.model, adapter=sft_adapter)
        rows, longest = grpo_rows(self.recipe, self.fmt, tokenizer, self.problems("grpo"))
        rows = selected_rows(rows, selected_from)
        vllm_args: dict[str, Any] = {}
        if self.recipe.model.use_vllm:
            from aha.eval.backends import size_vllm_for_cpu

            from .vllm_sync import install_cpu_weight_sync

            m = self.recipe.model
            if m.vllm_mode == "server":  # rollouts from `aha vllm-serve RECIPE`, started beside this run
                vllm_args = {"use_vllm": True, "vllm_mode": "server", "vllm_server_host": m.vllm_server_host,
                             "vllm_server_port": m.vllm_server_port}
            else:
                size_vllm_for_cpu(self.base, m.max_seq_length)  # TRL starts its engine itself
                vllm_args = {"use_vllm": True, "vllm_mode": "colocate"}
                if install_cpu_weight_sync():
                    log.info("vLLM on CPU: TRL's weight sync goes through vLLM's in-place reload")
        trainer, watch = grpo_trainer(self.recipe, model, tokenizer, self.fmt, rows, longest, out_dir,
                                      peft_config=None if sft_adapter else lora_config(self.recipe), **vllm_args)
        return {"prompts": len(rows), **train_and_save(trainer, out_dir), "warnings": watch.warned,
                **({"reward_errors": watch.error_counts()} if watch.error_counts() else {})}

    def export(self, adapter: str, out_dir: Path) -> dict[str, Any]:
        from .export import export

        return export(self.recipe, self.base, adapter, out_dir)

    def close(self) -> None:
        self._free_engine()
