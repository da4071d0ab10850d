"""The unsloth backend (CUDA only): FastLanguageModel with LoRA, TRL's SFT and GRPO trainers as
Unsloth patches them, and Unsloth's savers for merged and GGUF export.

Generation takes one of two paths, chosen once when the model loads and said in the log:

- vLLM usable here (:func:`aha.recipes.config.machine.vllm_problem`): Unsloth's vLLM engine
  (``fast_inference``) for GRPO's rollouts and for evaluation, the trained LoRA named in every
  request (loaded once per evaluation);
- no usable vLLM: aha's batched HF generation on Unsloth's own model for evaluation, TRL's
  own generation for rollouts.

Without CUDA the runner refuses this backend in one line before anything loads. The CLI
imports unsloth before anything imports transformers, TRL or PEFT, so its patches apply,
with its compiled cache in the run folder.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from aha.eval import Generation, HFBackend, Sampling
from aha.eval.backends import (check_lengths, generations_from_vllm, per_request, shutdown_engine_core,
                               vllm_sampling_params)

from ..config.machine import resolve_dtype, vllm_problem
from ..config.schema import Recipe, RecipeError
from .models import load_lora_weights

log = logging.getLogger("aha")


class UnslothBackend:
    name = "unsloth"

    def __init__(self, recipe: Recipe):
        import torch
        import unsloth  # noqa: F401 - must come before transformers/trl so its patches apply
        from unsloth import FastLanguageModel

        self.recipe = recipe
        m = recipe.model
        problem = vllm_problem()
        self.fast_inference = problem is None
        if problem:
            log.info("unsloth: %s, so evaluation runs aha's batched HF generation on Unsloth's model and GRPO's "
                     "rollouts TRL's own generation (slower than vLLM; the same answers' definition)", problem)
        # use_exact_model_name: load the recipe's own repo (Unsloth would otherwise swap Qwen/... for unsloth/...,
        # which a cache holding the recipe's repo does not have offline).
        self.model, self.tokenizer = FastLanguageModel.from_pretrained(
            model_name=m.name, max_seq_length=m.max_seq_length, dtype=getattr(torch, resolve_dtype(m.dtype)),
            load_in_4bit=m.load_in_4bit, fast_inference=self.fast_inference, max_lora_rank=recipe.lora.r,
            gpu_memory_utilization=m.gpu_memory_utilization, use_exact_model_name=True)
        self.model = FastLanguageModel.get_peft_model(
            self.model, r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
            target_modules=recipe.lora.target_modules, use_gradient_checkpointing=unsloth_checkpointing(recipe),
            random_state=recipe.seed)
        self.base = m.name
        self._loaded: str | None = None  # the adapter whose weights the LoRA layers hold now

    def generator(self, adapter: str | None) -> Any:
        if self.fast_inference:
            return _EngineGenerator(self, adapter)
        return _ModelGenerator(self, adapter)

    def hold(self, adapter: str) -> None:
        """Put ``adapter``'s weights into the model's LoRA layers (after a resume in a new
        process, or to evaluate it without vLLM); a file that does not fit is an error."""
        if self._loaded != adapter:
            load_lora_weights(self.model, adapter)
            self._loaded = adapter

    def training_model(self, adapter: str | None) -> tuple[Any, Any, Any]:
        """The one model, with its LoRA already on, holding ``adapter``'s weights when given."""
        if adapter:
            self.hold(adapter)
        return self.model, self.tokenizer, None

    def rollout_args(self) -> dict[str, Any]:
        # Unsloth's patched trainer generates with the model's own vLLM engine; without one, TRL's generate.
        return {"use_vllm": True} if self.fast_inference else {}

    def trained(self, adapter: Path) -> None:
        self._loaded = str(adapter)

    def merge(self, adapter: str, out: Path) -> Path:
        self.hold(adapter)
        self.model.save_pretrained_merged(str(out), self.tokenizer, save_method="merged_16bit")
        # Unsloth's merged saver writes the checkpoint's dtype (a bfloat16 hub checkpoint stays bfloat16 on a T4 that
        # trained and evaluated at float16; its dtype argument only widens to float32): the export is rewritten at
        # the precision the run used.
        cast_saved_weights(out, resolve_dtype(self.recipe.model.dtype))
        return out

    def gguf(self, adapter: str, out: Path, quantization: str) -> Path:
        """Unsloth writes the ``.gguf`` files beside ``out`` (``<out>_gguf``) and says where: that
        folder is what the run records, verifies and reports."""
        self.hold(adapter)
        folder = gguf_folder(self.model.save_pretrained_gguf(str(out), self.tokenizer, quantization_method=quantization),
                             out)
        if not any(folder.glob("*.gguf")):
            raise RecipeError(f"export.gguf: Unsloth's GGUF saver wrote no .gguf file into {folder}; its log above says "
                              "why")
        return folder

    def close(self) -> None:
        """Stop the vLLM engine Unsloth started with Unsloth's own teardown (``delete_vllm``: its
        executor, process groups and cache), drop every reference to it (the model holds three),
        and give back the model's GPU memory, before verify-export's fresh process loads the model."""
        try:
            release_unsloth(self.model)
        finally:
            self.model = self.tokenizer = None
            free_gpu_memory()


def unsloth_checkpointing(recipe: Recipe) -> str | bool:
    """Unsloth sets gradient checkpointing once, on the model (``get_peft_model``), and its trainers keep
    that choice whatever their configs say: Unsloth's own ("unsloth") when a training stage of the recipe
    asks for checkpointing (TRL's default), off when none does.

    >>> from aha.recipes.config.load import parse_recipe
    >>> off = {"gradient_checkpointing": False}
    >>> unsloth_checkpointing(parse_recipe({"model": {"name": "a/b"}, "sft": off, "grpo": off}))
    False
    >>> unsloth_checkpointing(parse_recipe({"model": {"name": "a/b"}, "sft": off}))
    'unsloth'
    """
    rft = recipe.grpo.enabled and recipe.grpo.trainer == "rft"  # its rounds train with the sft section's SFTConfig
    sections = [recipe.sft] if recipe.sft.enabled or rft else []
    sections += [recipe.grpo] if recipe.grpo.enabled and not rft else []
    return "unsloth" if any(section.trl.get("gradient_checkpointing", True) for section in sections) else False


def cast_saved_weights(folder: Path, dtype: str) -> None:
    """Rewrite a saved model's floating-point weights (its ``*.safetensors`` shards) and its config's dtype
    as ``dtype``, where they differ: a shard already at ``dtype`` is left unread (its header says so), and a
    rewritten shard replaces the old one only once it is whole. Tensor names and sizes (2 bytes for either
    16-bit type) stay, so a shard index stays true."""
    import json
    import os

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = getattr(torch, dtype)
    floats = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as reader:
            if all(floats.get(reader.get_slice(k).get_dtype(), target) == target for k in reader.keys()):
                continue
            cast = {k: (t.to(target) if t.is_floating_point() else t.clone())
                    for k, t in ((k, reader.get_tensor(k)) for k in reader.keys())}
        partial = shard.with_name(shard.name + ".partial")
        save_file(cast, str(partial), metadata={"format": "pt"})
        os.replace(partial, shard)
    config = Path(folder) / "config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        for key in ("dtype", "torch_dtype"):
            if key in data:
                data[key] = dtype
        config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def release_unsloth(model: Any) -> None:
    """Unsloth's teardown of the vLLM engine a ``fast_inference`` model holds, then the model's own
    references to it (``vllm_engine``, ``fast_generate``, ``fast_generate_batches``), so the engine's
    memory can go."""
    engine = getattr(model, "vllm_engine", None)
    if engine is None:
        return
    from unsloth_zoo.vllm_utils import delete_vllm

    shutdown_engine_core(engine)  # delete_vllm frees the executor and process groups, not the engine core
    delete_vllm(engine)
    for holder in {id(m): m for m in (model, getattr(model, "base_model", None), getattr(model, "model", None))
                   if m is not None}.values():
        for name in ("vllm_engine", "fast_generate", "fast_generate_batches"):
            if name in getattr(holder, "__dict__", {}):
                delattr(holder, name)


def free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def engine_length(model: Any, recipe: Recipe) -> int:
    """The longest sequence Unsloth's vLLM engine holds: ``model.max_seq_length``, unless Unsloth lowered it to
    fit the KV cache this GPU has room for (it says so as it starts); the engine's own figure when it has one."""
    config = getattr(getattr(getattr(getattr(model, "vllm_engine", None), "llm_engine", None), "vllm_config", None),
                     "model_config", None)
    return int(getattr(config, "max_model_len", None) or recipe.model.max_seq_length)


def gguf_folder(saved: Any, out: Path) -> Path:
    """The folder holding the ``.gguf`` files of Unsloth's ``save_pretrained_gguf``, from what it
    returned (a mapping with ``gguf_directory``, in 2026.10) or else where it writes them.

    >>> str(gguf_folder({"gguf_directory": "/r/x_gguf", "gguf_files": []}, Path("/r/x"))), str(gguf_folder(None, Path("/r/x")))
    ('/r/x_gguf', '/r/x_gguf')
    """
    if isinstance(saved, dict) and saved.get("gguf_directory"):
        return Path(saved["gguf_directory"])
    return Path(f"{out}_gguf")


class _EngineGenerator:
    """A generator (:class:`aha.eval.backends.Generator`) over Unsloth's ``fast_generate``,
    bound to one adapter: the trained LoRA is named in each request, loaded into the engine
    once for this generator (one evaluation), not once per batch."""

    name = "unsloth"

    def __init__(self, owner: UnslothBackend, adapter: str | None):
        self.owner, self.adapter, self.tokenizer = owner, adapter, owner.tokenizer
        self._request: Any = None

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[Generation]]:
        return self.generate_many([(prompts, sampling, adapter)])[0]

    def generate_many(self, requests: list[tuple[list[str], Sampling, str | None]]) -> list[list[list[Generation]]]:
        """Several requests in one call of the engine (``fast_generate`` is vLLM's ``LLM.generate``, which takes one
        sampling setting per prompt): a stage's evaluations share one continuous batch."""
        model = self.owner.model
        for prompts, sampling, _ in requests:
            check_lengths(self.tokenizer, prompts, sampling.max_new_tokens, engine_length(model, self.owner.recipe),
                          "Unsloth's vLLM engine")
        if self.adapter and self._request is None:
            self._request = model.load_lora(self.adapter)
        prompts = [p for texts, _, _ in requests for p in texts]
        params = [vllm_sampling_params(sampling) for texts, sampling, _ in requests for _ in texts]
        outputs = model.fast_generate(prompts, sampling_params=params, lora_request=self._request, use_tqdm=False)
        return per_request(generations_from_vllm(outputs), requests, "Unsloth's vLLM engine")


class _ModelGenerator:
    """Without vLLM: aha's batched HF generation on Unsloth's model, its LoRA layers holding the
    bound adapter's weights (the base model: the adapter switched off)."""

    name = "unsloth-hf"

    def __init__(self, owner: UnslothBackend, adapter: str | None):
        self.owner, self.adapter, self.tokenizer = owner, adapter, owner.tokenizer
        self.batch_size = owner.recipe.eval.batch_size  # prompts per batch; prompts_per_batch_for shrinks it per sample

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[Generation]]:
        from unsloth import FastLanguageModel

        model = self.owner.model
        if self.adapter:
            self.owner.hold(self.adapter)
        FastLanguageModel.for_inference(model)
        try:
            with model.disable_adapter() if self.adapter is None else nullcontext():
                return HFBackend(model, self.tokenizer, batch_size=self.batch_size).generate(prompts, sampling)
        finally:
            FastLanguageModel.for_training(model)
