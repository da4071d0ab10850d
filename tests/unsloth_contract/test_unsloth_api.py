"""The unsloth backend against the real Unsloth (its own venv: Unsloth caps transformers and
TRL below what the main suite uses). `UNSLOTH_ALLOW_CPU=1` lets `import unsloth` through on
a CPU machine; loading a model still needs a GPU, so this checks the API our calls rely on:
every Unsloth function the backend calls exists, and every keyword we pass is one of its
named parameters (not swallowed by **kwargs). An Unsloth release that renames one fails here.

Run by `bash scripts/dev.sh test` (and so by CI) in `.venv-unsloth`; skipped elsewhere."""

import ast
import inspect
from pathlib import Path

import pytest

unsloth = pytest.importorskip("unsloth", reason="the Unsloth contract runs in its own venv (scripts/dev.sh)")

BACKEND = Path(__file__).resolve().parents[2] / "recipes" / "training" / "unsloth_backend.py"


def _calls(method: str) -> list[ast.Call]:
    """Every call of ``<something>.<method>(...)`` in the backend's source."""
    tree = ast.parse(BACKEND.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == method]


def _named(fn) -> set[str]:
    return {name for name, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _real(method: str):
    from unsloth import FastLanguageModel
    from unsloth import save as unsloth_save
    from unsloth_zoo import vllm_utils

    return {"from_pretrained": FastLanguageModel.from_pretrained, "get_peft_model": FastLanguageModel.get_peft_model,
            # what FastLanguageModel binds onto a LoRA model as save_pretrained_merged (2026.10: the generic saver)
            "save_pretrained_merged": unsloth_save.unsloth_generic_save_pretrained_merged,
            "save_pretrained_gguf": unsloth_save.unsloth_save_pretrained_gguf,
            "load_lora": vllm_utils.load_lora}[method]


@pytest.mark.parametrize("method", ["from_pretrained", "get_peft_model", "save_pretrained_merged",
                                    "save_pretrained_gguf", "load_lora"])
def test_every_keyword_we_pass_is_a_named_parameter(method):
    calls = _calls(method)
    assert calls, f"the backend no longer calls {method}: update this contract"
    named = _named(_real(method))
    for call in calls:
        passed = {k.arg for k in call.keywords if k.arg}
        assert passed <= named, f"{method}: Unsloth has no parameter(s) {sorted(passed - named)}"
        # positional arguments: as many as the real function takes before its keywords
        bound = 1 if method in ("save_pretrained_merged", "save_pretrained_gguf", "load_lora") else 0  # self / model
        assert len(call.args) + bound <= len(named)


def test_recipe_values_reach_unsloth_by_these_names():
    """The recipe's model and LoRA settings map onto Unsloth's own parameter names."""
    load = {k.arg for c in _calls("from_pretrained") for k in c.keywords}
    peft = {k.arg for c in _calls("get_peft_model") for k in c.keywords}
    assert {"model_name", "max_seq_length", "dtype", "load_in_4bit", "fast_inference", "max_lora_rank",
            "gpu_memory_utilization", "use_exact_model_name"} <= load
    assert {"r", "lora_alpha", "lora_dropout", "target_modules", "use_gradient_checkpointing", "random_state"} <= peft
    assert {"model_name", "max_seq_length", "load_in_4bit", "fast_inference", "max_lora_rank",
            "gpu_memory_utilization"} <= _named(_real("from_pretrained"))


def test_save_methods_accept_our_choices():
    merged = inspect.signature(_real("save_pretrained_merged")).parameters
    assert merged["save_method"].default == "merged_16bit"  # the value we pass explicitly is its documented one
    assert "quantization_method" in inspect.signature(_real("save_pretrained_gguf")).parameters


def test_the_generation_switches_we_call_exist():
    """Without vLLM the backend generates on Unsloth's model between these two switches."""
    from unsloth import FastLanguageModel

    assert callable(FastLanguageModel.for_inference) and callable(FastLanguageModel.for_training)


def test_the_merged_saver_we_call_is_the_one_bound_and_keeps_the_checkpoints_dtype():
    """The saver FastLanguageModel binds onto a LoRA model takes a dtype that defaults to the checkpoint's (and
    widens only to float32): the backend rewrites the merged files at the run's precision after it saves."""
    from unsloth import save as unsloth_save

    assert inspect.signature(unsloth_save.unsloth_generic_save_pretrained_merged).parameters["dtype"].default is None
    merge = next(node for node in ast.walk(ast.parse(BACKEND.read_text(encoding="utf-8")))
                 if isinstance(node, ast.FunctionDef) and node.name == "merge")
    called = [n.func.id for n in ast.walk(merge) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "cast_saved_weights" in called


def test_unsloths_own_engine_teardown_takes_the_engine():
    """close() hands the model's vLLM engine (model.vllm_engine) to Unsloth's delete_vllm."""
    from unsloth_zoo.vllm_utils import delete_vllm

    assert list(inspect.signature(delete_vllm).parameters) == ["llm"]
