"""The unsloth backend (CUDA only): FastLanguageModel with its vLLM engine (fast_inference),
LoRA, TRL's SFT and GRPO trainers as Unsloth patches them, evaluation through that same
engine with the trained LoRA named in every request, and Unsloth's savers for merged
and GGUF export.

Not exercised by CI (no GPU there), and not yet run on a GPU: no GPU machine has been lent
to this work so far. Without CUDA the runner refuses this backend in one line before
anything loads (tested). The CLI imports unsloth before anything imports transformers,
TRL or PEFT (tested), with its compiled cache in the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aha.eval import Generation, Sampling
from aha.eval.backends import generations_from_vllm, vllm_sampling_params
from aha.formats import Format

from .schema import Recipe
from .data import grpo_rows, sft_rows, training_problems

log = logging.getLogger("aha")


class UnslothBackend:
    name = "unsloth"

    def __init__(self, recipe: Recipe, run: Any, fmt: Format):
        import unsloth  # noqa: F401 - must come before transformers/trl so its patches apply
        from unsloth import FastLanguageModel

        self.recipe, self.run, self.fmt = recipe, run, fmt
        m = recipe.model
        self.model, self.tokenizer = FastLanguageModel.from_pretrained(
            model_name=m.name, max_seq_length=m.max_seq_length, load_in_4bit=m.load_in_4bit, fast_inference=True,
            max_lora_rank=recipe.lora.r, gpu_memory_utilization=m.gpu_memory_utilization)
        self.model = FastLanguageModel.get_peft_model(
            self.model, r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
            target_modules=recipe.lora.target_modules, use_gradient_checkpointing="unsloth", random_state=recipe.seed)
        self.base = m.name
        self._loaded: str | None = None  # the adapter whose weights the LoRA layers hold now

    # -- evaluation through the engine Unsloth shares with training --
    def generator(self, adapter: str | None) -> Any:
        return _EngineGenerator(self, adapter)

    def _load_weights(self, adapter: str | None) -> None:
        """Resuming after SFT finished in an earlier process: put its weights back in place."""
        if adapter and self._loaded != adapter:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.model, load_file(str(Path(adapter) / "adapter_model.safetensors")))
            self._loaded = adapter

    def sft(self, out_dir: Path) -> dict[str, Any]:
        from .train import sft_trainer, train_and_save

        rows = sft_rows(self.recipe, self.fmt, self.tokenizer, training_problems(self.recipe, "sft"))
        trainer = sft_trainer(self.recipe, self.model, self.tokenizer, rows, out_dir)  # the LoRA is already on
        result = {"examples": len(rows), **train_and_save(trainer, out_dir)}
        self._loaded = str(out_dir / "adapter")
        return result

    def preflight(self, out_dir: Path, start_adapter: str | None) -> dict[str, Any]:
        from .preflight import preflight_stage

        self._load_weights(start_adapter)
        return preflight_stage(self.recipe, self.fmt, self.generator(start_adapter),
                               training_problems(self.recipe, "grpo"), out_dir)

    def grpo(self, out_dir: Path, sft_adapter: str | None, selected_from: Path | None = None) -> dict[str, Any]:
        from .preflight import selected_rows
        from .train import grpo_trainer, train_and_save

        self._load_weights(sft_adapter)
        rows, longest = grpo_rows(self.recipe, self.fmt, self.tokenizer, training_problems(self.recipe, "grpo"))
        rows = selected_rows(rows, selected_from)
        # Unsloth's patched trainer generates with the model's own vLLM engine (fast_inference).
        trainer, watch = grpo_trainer(self.recipe, self.model, self.tokenizer, self.fmt, rows, longest, out_dir,
                                      use_vllm=True)
        result = {"prompts": len(rows), **train_and_save(trainer, out_dir), "warnings": watch.warned,
                **({"reward_errors": watch.error_counts()} if watch.error_counts() else {})}
        self._loaded = str(out_dir / "adapter")
        return result

    def export(self, adapter: str, out_dir: Path) -> dict[str, Any]:
        from dataclasses import replace

        from .export import export

        # The adapter copy (and hub push) as on every backend; merging is Unsloth's saver's job here.
        done = export(replace(self.recipe, export=replace(self.recipe.export, merged=False)), self.base, adapter,
                      out_dir)
        self._load_weights(adapter)
        if self.recipe.export.merged:
            self.model.save_pretrained_merged(str(out_dir / "merged"), self.tokenizer, save_method="merged_16bit")
            done["merged"] = str(out_dir / "merged")
        if self.recipe.export.gguf:
            self.model.save_pretrained_gguf(str(out_dir / "gguf"), self.tokenizer,
                                            quantization_method=self.recipe.export.gguf)
            done["gguf"] = str(out_dir / "gguf")
        return done

    def close(self) -> None:
        """Stop the vLLM engine Unsloth started and give back the model's GPU memory."""
        import gc

        import torch

        engine = getattr(self.model, "vllm_engine", None)
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.model = self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class _EngineGenerator:
    """A generator (:class:`aha.eval.backends.Generator`) over Unsloth's ``fast_generate``,
    bound to one adapter: the trained LoRA is named in each request."""

    name = "unsloth"

    def __init__(self, owner: UnslothBackend, adapter: str | None):
        self.owner, self.adapter, self.tokenizer = owner, adapter, owner.tokenizer

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[Generation]]:
        path = self.adapter
        request = self.owner.model.load_lora(path) if path else None  # the trained LoRA, named in each request
        outputs = self.owner.model.fast_generate(prompts, sampling_params=vllm_sampling_params(sampling),
                                                 lora_request=request, use_tqdm=False)
        return generations_from_vllm(outputs)
