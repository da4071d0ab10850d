"""The unsloth backend (CUDA only): FastLanguageModel with its vLLM engine (fast_inference),
LoRA, TRL's SFT and GRPO trainers as Unsloth patches them, evaluation through that same
engine with the trained LoRA named in every request, and Unsloth's savers for merged
and GGUF export.

Not exercised by CI (no GPU there), and not yet run on a GPU: no GPU machine has been lent
to this work so far. Without CUDA the runner refuses this backend in one line before
anything loads (tested).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aha.eval import Generation, Sampling
from aha.formats import Format

from .config import Recipe
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
        from datasets import Dataset
        from trl import SFTTrainer

        from .train import _train, trl_args

        rows = sft_rows(self.recipe, self.fmt, self.tokenizer, training_problems(self.recipe, "sft"))
        args = trl_args(self.recipe, "sft", out_dir, max_length=self.recipe.sft.max_tokens)
        trainer = SFTTrainer(model=self.model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=self.tokenizer)
        _train(trainer, out_dir)
        self._loaded = str(out_dir / "adapter")
        return {"examples": len(rows), "steps": trainer.state.global_step}

    def grpo(self, out_dir: Path, sft_adapter: str | None) -> dict[str, Any]:
        from datasets import Dataset
        from trl import GRPOTrainer

        from .train import RewardWatch, _train, reward_functions, trl_args

        self._load_weights(sft_adapter)
        rows, longest = grpo_rows(self.recipe, self.fmt, self.tokenizer, training_problems(self.recipe, "grpo"))
        computed: dict[str, Any] = {"use_vllm": True}
        if self.recipe.grpo.trl.get("max_completion_length", "unset") is None:
            computed["max_completion_length"] = self.recipe.model.max_seq_length - longest
        funcs, weights = reward_functions(self.recipe, self.fmt, self.tokenizer.eos_token)
        args = trl_args(self.recipe, "grpo", out_dir, reward_weights=weights, **computed)
        watch = RewardWatch(self.recipe, [f.__name__ for f in funcs], args.max_completion_length)
        trainer = GRPOTrainer(model=self.model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=self.tokenizer, callbacks=[watch])
        _train(trainer, out_dir)
        self._loaded = str(out_dir / "adapter")
        return {"prompts": len(rows), "steps": trainer.state.global_step, "warnings": watch.warned}

    def export(self, adapter: str, out_dir: Path) -> dict[str, Any]:
        from .export import export

        from dataclasses import replace

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
        pass


class _EngineGenerator:
    """The evaluation harness's backend interface over Unsloth's ``fast_generate``."""

    name = "vllm"

    def __init__(self, owner: UnslothBackend, adapter: str | None):
        self.owner, self.adapter, self.tokenizer = owner, adapter, owner.tokenizer

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[Generation]]:
        from vllm import SamplingParams

        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        path = adapter or self.adapter
        request = self.owner.model.load_lora(path) if path else None  # the trained LoRA, named in each request
        outputs = self.owner.model.fast_generate(prompts, sampling_params=params, lora_request=request, use_tqdm=False)
        return [[Generation(o.text, len(o.token_ids), o.finish_reason == "length") for o in out.outputs]
                for out in outputs]
