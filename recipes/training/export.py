"""Writers of what a run ships: merged weights (PEFT merge) and the hub upload."""

from __future__ import annotations

import os
from pathlib import Path

from ..config.schema import RecipeError


def merge_adapter(base: str, adapter: str, out: Path, dtype: str) -> Path:
    """Base + LoRA merged into plain weights saved at ``dtype``, with the tokenizer.

    ``dtype`` is the precision the run evaluated at: weights rounded below it (a bfloat16 save of
    a float32 evaluation) answer differently from the model the report measured."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aha.eval.backends import model_device, place

    # On a CPU: merge at float32, then cast once. On a GPU, at the run's own 16 bits there (a float32 copy of a
    # 4B model would not fit a T4 beside nothing else); a 16-bit merge is verify-export's "rounded" class anyway.
    at = torch.float32 if dtype == "float32" or model_device() == "cpu" else getattr(torch, dtype)
    model = place(AutoModelForCausalLM.from_pretrained(base, dtype=at))
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    merged.save_pretrained(str(out))
    tokenizer_from = adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base  # training saved one
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(str(out))
    return out


def push_folder(folder: Path, repo_id: str) -> str:
    """Upload ``folder`` (an adapter with its model card) to the hub repo ``repo_id``."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise RecipeError(f"export.push_to_hub: cannot push to {repo_id} with HF_HUB_OFFLINE=1")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    return f"https://huggingface.co/{repo_id}"
