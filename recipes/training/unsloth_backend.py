"""The unsloth backend (CUDA only): FastLanguageModel with its vLLM engine (fast_inference),
LoRA, TRL's SFT and GRPO trainers as Unsloth patches them, evaluation through that same
engine with the trained LoRA named in every request, and Unsloth's savers for merged
and GGUF export.

Without CUDA the runner refuses this backend in one line before anything loads. The CLI
imports unsloth before anything imports transformers, TRL or PEFT, so its patches apply,
with its compiled cache in the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aha.eval import Generation, Sampling
from aha.eval.backends import generations_from_vllm, vllm_sampling_params

from ..config.schema import Recipe


class UnslothBackend:
    name = "unsloth"

    def __init__(self, recipe: Recipe):
        import unsloth  # noqa: F401 - must come before transformers/trl so its patches apply
        from unsloth import FastLanguageModel

        self.recipe = recipe
        m = recipe.model
        self.model, self.tokenizer = FastLanguageModel.from_pretrained(
            model_name=m.name, max_seq_length=m.max_seq_length, load_in_4bit=m.load_in_4bit, fast_inference=True,
            max_lora_rank=recipe.lora.r, gpu_memory_utilization=m.gpu_memory_utilization)
        self.model = FastLanguageModel.get_peft_model(
            self.model, r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
            target_modules=recipe.lora.target_modules, use_gradient_checkpointing="unsloth", random_state=recipe.seed)
        self.base = m.name
        self._loaded: str | None = None  # the adapter whose weights the LoRA layers hold now

    def generator(self, adapter: str | None) -> Any:
        return _EngineGenerator(self, adapter)

    def training_model(self, adapter: str | None) -> tuple[Any, Any, Any]:
        """The one model, with its LoRA already on; after a resume in a new process, the
        starting adapter's weights are put back in place first."""
        if adapter and self._loaded != adapter:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.model, load_file(str(Path(adapter) / "adapter_model.safetensors")))
            self._loaded = adapter
        return self.model, self.tokenizer, None

    def rollout_args(self) -> dict[str, Any]:
        return {"use_vllm": True}  # Unsloth's patched trainer generates with the model's own engine

    def trained(self, adapter: Path) -> None:
        self._loaded = str(adapter)

    def merge(self, adapter: str, out: Path) -> Path:
        self.training_model(adapter)
        self.model.save_pretrained_merged(str(out), self.tokenizer, save_method="merged_16bit")
        return out

    def gguf(self, adapter: str, out: Path, quantization: str) -> Path:
        self.training_model(adapter)
        self.model.save_pretrained_gguf(str(out), self.tokenizer, quantization_method=quantization)
        return out

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
        request = self.owner.model.load_lora(self.adapter) if self.adapter else None
        outputs = self.owner.model.fast_generate(prompts, sampling_params=vllm_sampling_params(sampling),
                                                 lora_request=request, use_tqdm=False)
        return generations_from_vllm(outputs)
