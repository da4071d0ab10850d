"""Export: the LoRA adapter always; merged 16-bit weights on request; hub push on request."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from .schema import Recipe, RecipeError

log = logging.getLogger("aha")


def export(recipe: Recipe, base: str, adapter: str, out_dir: Path) -> dict[str, Any]:
    done: dict[str, Any] = {}
    target = out_dir / "adapter"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(adapter, target)
    done["adapter"] = str(target)
    if recipe.export.merged:
        done["merged"] = str(merge_adapter(base, adapter, out_dir / "merged"))
    if recipe.export.push_to_hub:
        done["hub"] = push_adapter(target, recipe.export.push_to_hub)
    return done


def merge_adapter(base: str, adapter: str, out: Path, dtype: str = "bfloat16") -> Path:
    """Base + LoRA merged into plain weights (16-bit by default), with the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)  # merge in fp32, then cast once
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    merged.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(adapter).save_pretrained(str(out))
    return out


def push_adapter(folder: Path, repo_id: str) -> str:
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise RecipeError(f"export.push_to_hub: cannot push to {repo_id} with HF_HUB_OFFLINE=1")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    return f"https://huggingface.co/{repo_id}"
