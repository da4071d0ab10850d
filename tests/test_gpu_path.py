"""The GPU path, checked on a CPU machine: what only a GPU has (CUDA's availability, its name and
compute capability) is patched in torch; aha's own code runs as it is. Each rule is shown to
take the GPU branch: where a model is put, the precision and backend refusals, GGUF's llama.cpp,
the KL reference, one engine per comparison, NaN guards, LoRA loads that do not fit."""

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from aha.recipes.api import load_recipe
from aha.recipes.config.schema import RecipeError
from aha.recipes.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _gpu(monkeypatch, capability=(8, 0), name="NVIDIA A100-SXM4-40GB"):
    """This machine as one with a CUDA GPU of ``capability``, as far as torch's answers go."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def test_every_model_load_asks_for_the_gpu_when_there_is_one(tiny_qwen3, tiny_adapter, tmp_path, monkeypatch):
    """Evaluation, the preflight, verify-export, `aha eval`, try_model and the benchmarks load
    through load_model, and the merge through the same rule: on a CPU machine they load on the
    CPU; told a GPU is there, each asks torch for CUDA (which this torch, built without it, refuses)."""
    from aha.eval import load_model
    from aha.recipes.training.export import merge_adapter

    model, _ = load_model(str(tiny_qwen3), adapter=str(tiny_adapter), dtype="float32")
    assert model.device.type == "cpu"
    _gpu(monkeypatch)
    with pytest.raises((AssertionError, RuntimeError), match="CUDA|cuda"):
        load_model(str(tiny_qwen3), dtype="float32")
    with pytest.raises((AssertionError, RuntimeError), match="CUDA|cuda"):
        merge_adapter(str(tiny_qwen3), str(tiny_adapter), tmp_path / "merged", "bfloat16")


# Where a model class's from_pretrained may stand in aha's code, and why it is not load_model.
PLACED_ELSEWHERE = {
    ("eval/backends.py", "load_model"): "the rule itself",
    ("recipes/training/export.py", "merge_adapter"): "placed by the rule (place)",
    ("recipes/training/models.py", "load_for_training"): "the Trainer places its model (each process its own GPU)",
    ("recipes/training/models.py", "dequantize_gguf"): "a one-off conversion to a plain folder on the CPU",
    ("recipes/training/unsloth_backend.py", "__init__"): "Unsloth places its own model",
    ("benchmarks/train.py", "plain_trainer"): "training benchmark: the Trainer places it",
    ("rewards/model.py", "load"): "a reward model scores beside training: on the training process's own device "
                                  "(accelerate's), as the Trainer places its model",
}
MODEL_CLASSES = {"AutoModelForCausalLM", "PeftModel", "FastLanguageModel", "AutoModel", "AutoModelForSequenceClassification"}


def test_no_model_load_of_ours_bypasses_the_rule():
    found = set()
    for folder in ("eval", "recipes", "formats", "rewards", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
                for call in ast.walk(func):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                            and call.func.attr == "from_pretrained" and isinstance(call.func.value, ast.Name)
                            and call.func.value.id in MODEL_CLASSES):
                        found.add((str(path.relative_to(ROOT)), func.name))
    unexpected = {f for f in found if f not in PLACED_ELSEWHERE}
    assert not unexpected, f"model loads that skip aha.eval.backends.model_device: {sorted(unexpected)}"


def _local_model(tmp_path, tiny_qwen3):
    return str(tiny_qwen3)


@pytest.mark.parametrize("gpu, overrides, message", [
    (((7, 5), "Tesla T4"), ["model.dtype=bfloat16"], "this GPU (Tesla T4, compute capability 7.5) has no bfloat16"),
    (((8, 0), "NVIDIA A100"), ["model.backend=unsloth", "model.dtype=float16"], "float16 with backend unsloth"),
    (((8, 0), "NVIDIA A100"), ["model.backend=unsloth", "model.dtype=float32"], "backend unsloth: it trains a float32 model"),
    (((8, 0), "NVIDIA A100"), ["model.backend=unsloth", "model.dtype=auto", "grpo.beta=0.04"], "with the unsloth backend after the SFT "
     "warmup: its GRPO takes the base model as the KL reference"),
])
def test_what_a_gpu_cannot_train_is_refused_before_anything_loads(gpu, overrides, message, tiny_qwen3, monkeypatch):
    _gpu(monkeypatch, *gpu)
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe("tiny-qwen3-smoke", overrides=[f"model.name={tiny_qwen3}", *overrides])


def test_auto_says_which_backend_it_chose_and_why(monkeypatch):
    from aha.recipes.config.machine import choose_backend
    from aha.recipes.config.schema import ModelConfig

    assert choose_backend("auto", ModelConfig(name="a/b")) == ("hf", "auto: this machine has no CUDA GPU")
    _gpu(monkeypatch)
    monkeypatch.setattr("aha.recipes.config.machine.has_unsloth", lambda: False)
    assert choose_backend("auto", ModelConfig(name="a/b")) == ("hf", "auto: unsloth is not installed")
    monkeypatch.setattr("aha.recipes.config.machine.has_unsloth", lambda: True)
    assert choose_backend("auto", ModelConfig(name="a/b")) == ("unsloth", "auto: a CUDA GPU (NVIDIA A100-SXM4-40GB) "
                                                               "and unsloth are here")
    assert choose_backend("auto", ModelConfig(name="builtin:tiny-qwen3"))[0] == "hf"


def test_vllm_that_unsloth_switched_off_is_not_usable(monkeypatch):
    """Unsloth, as it is imported, switches off a vLLM built for another stack (VLLM_DISABLED_REASON);
    fast_inference is then not asked for."""
    import sys
    import types

    from aha.recipes.config.machine import vllm_problem

    pytest.importorskip("vllm")
    assert vllm_problem() is None
    fixes = types.ModuleType("unsloth.import_fixes")
    fixes.VLLM_DISABLED_REASON = "vLLM 0.32 was built for torch 2.13.0 and this is 2.11\nmore"
    monkeypatch.setitem(sys.modules, "unsloth.import_fixes", fixes)
    assert vllm_problem() == "Unsloth switched vLLM off (vLLM 0.32 was built for torch 2.13.0 and this is 2.11)"


def test_gguf_without_llama_cpp_offline_is_refused_before_training(tiny_qwen3, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", str(tmp_path / "llama.cpp"))
    overrides = {"model.name": str(tiny_qwen3), "model.backend": "unsloth", "export.gguf": "q4_k_m"}
    with pytest.raises(RecipeError, match="set UNSLOTH_LLAMA_CPP_PATH to its folder"):
        load_recipe("tiny-qwen3-smoke", overrides=overrides)
    (tmp_path / "llama.cpp").mkdir()
    for tool in ("llama-quantize", "convert_hf_to_gguf.py"):
        (tmp_path / "llama.cpp" / tool).write_text("")
    assert load_recipe("tiny-qwen3-smoke", overrides=overrides).export.gguf == "q4_k_m"
    with pytest.raises(RecipeError, match="export.gguf needs backend unsloth"):  # auto on this CPU machine: hf
        load_recipe("tiny-qwen3-smoke", overrides={**overrides, "model.backend": "auto"})


def test_validation_reads_the_backends_declared_abilities(tiny_qwen3, monkeypatch):
    """Validation asks a backend's BackendAbilities, never its name: give hf an ability it lacks and the
    refusal goes; take one from it and a recipe it ran is refused."""
    import dataclasses

    from aha.recipes.config import machine

    hf = machine.BACKENDS["hf"]
    gguf = {"model.name": str(tiny_qwen3), "model.backend": "hf", "export.gguf": "q4_k_m"}
    with pytest.raises(RecipeError, match="export.gguf needs backend unsloth"):
        load_recipe("tiny-qwen3-smoke", overrides=gguf)
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", "/nonexistent/llama.cpp")
    monkeypatch.setitem(machine.BACKENDS, "hf", dataclasses.replace(hf, gguf=True, load_in_4bit=True))
    with pytest.raises(RecipeError, match="UNSLOTH_LLAMA_CPP_PATH"):  # past the ability check, at llama.cpp's
        load_recipe("tiny-qwen3-smoke", overrides=gguf)
    assert load_recipe("tiny-qwen3-smoke", overrides={"model.name": str(tiny_qwen3), "model.load_in_4bit": True})
    monkeypatch.setitem(machine.BACKENDS, "hf", dataclasses.replace(hf, kl_reference="the base model"))
    with pytest.raises(RecipeError, match="with the hf backend after the SFT warmup: its GRPO takes the base model"):
        load_recipe("tiny-qwen3-smoke", overrides={"model.name": str(tiny_qwen3), "grpo.beta": 0.04})
    _gpu(monkeypatch)
    monkeypatch.setitem(machine.BACKENDS, "hf", dataclasses.replace(hf, float32=False))
    with pytest.raises(RecipeError, match="model.dtype float32 with backend hf"):
        load_recipe("tiny-qwen3-smoke", overrides={"model.name": str(tiny_qwen3), "model.dtype": "float32"})


def test_a_lora_file_that_does_not_fit_is_an_error(tiny_qwen3, tiny_adapter, tmp_path):
    """Resuming Unsloth's model from a saved adapter: PEFT reports keys that do not fit without
    raising, which would start GRPO from a fresh adapter; aha refuses."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from aha.recipes.training.models import load_lora_weights

    config = json.loads((tiny_adapter / "adapter_config.json").read_text())

    def model(targets):
        base = AutoModelForCausalLM.from_pretrained(str(tiny_qwen3), dtype=torch.float32)
        return get_peft_model(base, LoraConfig(r=config["r"], lora_alpha=config["lora_alpha"], target_modules=targets))

    same = model(config["target_modules"])
    load_lora_weights(same, tiny_adapter)
    from safetensors.torch import load_file

    saved = load_file(str(tiny_adapter / "adapter_model.safetensors"))
    key = next(iter(saved))
    live = {k.replace(".default", ""): v for k, v in same.state_dict().items() if "lora_" in k}
    assert torch.equal(live[key], saved[key])
    with pytest.raises(RecipeError, match="do not fit this model"):
        load_lora_weights(model(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
                          tiny_adapter)


def test_nan_loss_stops_grpo_without_saving():
    from transformers import TrainerControl

    from aha.recipes.training.trainers import RewardWatch

    recipe = load_recipe("tiny-qwen3-smoke")
    watch = RewardWatch(recipe, [], 16)
    control = TrainerControl(should_save=True)
    state = type("State", (), {"global_step": 7})()
    watch.on_log(None, state, control, logs={"loss": 0.01, "grad_norm": 0.3})
    assert watch.diverged is None and not control.should_training_stop
    watch.on_log(None, state, control, logs={"loss": float("nan"), "grad_norm": math.inf})
    assert control.should_training_stop and not control.should_save
    assert watch.diverged.startswith("grpo stopped at step 7: loss nan and grad_norm inf; nothing from this step")


def test_compare_refuses_two_engines_unless_asked(tiny_qwen3, tmp_path, capsys):
    """An evaluation another engine generated (its fingerprint says vllm) is not paired with an
    HF one unless --allow-mixed, and the report then says so."""
    import shutil

    before = tmp_path / "before"
    assert main(["eval", "--model", str(tiny_qwen3), "--task", "arith", "--limit", "4", "--max-new-tokens", "8",
                 "--dtype", "float32", "--out", str(before)]) == 0
    after = tmp_path / "after"
    shutil.copytree(before, after)
    fingerprint = after / "fingerprint.json"
    fingerprint.write_text(json.dumps({**json.loads(fingerprint.read_text()), "backend": "vllm"}))
    capsys.readouterr()
    assert main(["compare", str(before), str(after)]) == 2
    err = capsys.readouterr().err.strip()
    assert "were not generated alike (backend hf vs vllm)" in err and "--allow-mixed" in err and "\n" not in err
    assert main(["compare", str(before), str(after), "--allow-mixed"]) == 0
    assert "Generated differently (backend hf vs vllm; --allow-mixed)" in (after / "compare.md").read_text()


def test_engine_lengths_are_refused_not_cut():
    from aha.eval.backends import check_lengths
    from aha.formats import InputError
    from aha.recipes.training.models import qwen3_tokenizer_folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_folder()))
    check_lengths(tokenizer, ["one two three"], 13, 16, "the engine")
    with pytest.raises(InputError, match="plus max_new_tokens 14 is longer than the 16 tokens the engine holds"):
        check_lengths(tokenizer, ["one two three"], 14, 16, "the engine")


@pytest.mark.parametrize("cuda_build, driver, visible, message", [
    ("13.0", "550.54.15", None, "torch {torch} is built for CUDA 13.0, which needs driver 580 or newer, so CUDA is "
                                "invisible"),
    ("12.4", "580.65.06", None, "torch {torch} (built for CUDA 12.4) cannot use it; check the install"),
    (None, "550.54.15", None, None),  # a CPU build of torch, installed on purpose: a CPU run
    ("13.0", "550.54.15", "", None),  # the GPU hidden on purpose
])
def test_a_gpu_torch_cannot_see_is_refused_not_run_on_the_cpu(cuda_build, driver, visible, message, tmp_path,
                                                               monkeypatch, capsys):
    """What only a GPU machine has is patched: its driver's version file, its device node and torch's CUDA
    build. A CUDA build that cannot see the GPU is refused in one line before anything loads, instead of
    quietly training on the CPU; a CPU build or a GPU hidden with CUDA_VISIBLE_DEVICES runs as asked."""
    import torch

    from aha.recipes.cli import main
    from aha.recipes.config import machine

    version, device = tmp_path / "version", tmp_path / "nvidiactl"
    version.write_text(f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {driver}  Release Build\n")
    device.write_text("")
    monkeypatch.setattr(machine, "NVIDIA_DRIVER_FILE", str(version))
    monkeypatch.setattr(machine, "NVIDIA_DEVICE", str(device))
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    if message is None:
        assert main(["run", "tiny-qwen3-smoke", "--dry-run"]) == 0
        return
    assert main(["run", "tiny-qwen3-smoke", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aha: error: model.backend hf: this machine has an NVIDIA GPU (driver {driver}), but ")
    assert message.format(torch=torch.__version__) in err and "\n" not in err
    monkeypatch.setattr(machine, "NVIDIA_DEVICE", str(tmp_path / "none"))  # no GPU for this process: a CPU run
    assert main(["run", "tiny-qwen3-smoke", "--dry-run"]) == 0


def test_greedy_hf_generation_ignores_the_models_own_decoding_settings(tiny_qwen3, tmp_path):
    """Qwen2.5-Instruct's generation_config.json sets a repetition penalty (and top_k, temperature, ...), which
    transformers' generate applies to every knob a call leaves unset: greedy is then not greedy, and HF answers
    differently from vLLM. aha's HF generation follows only its Sampling: its greedy tokens are the argmax of
    the logits at every step, whatever the model's config says (and differ from what the config alone gives)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from aha.eval import HFBackend, Sampling

    folder = tmp_path / "model"
    shutil.copytree(tiny_qwen3, folder)
    GenerationConfig(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=5.0,
                     no_repeat_ngram_size=2, eos_token_id=-1).save_pretrained(folder)  # an eos never produced
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    prompt = "Count: 1 1 1 1 1 1"
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        plain = ids
        for _ in range(12):  # greedy by hand: the argmax of the model's logits, nothing else
            plain = torch.cat([plain, model(plain).logits[:, -1:].argmax(-1)], dim=1)
        configured = model.generate(ids, max_new_tokens=12, do_sample=False)  # the config's knobs fill the rest
    ours = HFBackend(model, tokenizer).generate([prompt], Sampling(max_new_tokens=12))[0][0]
    expected = plain[0, ids.shape[1]:].tolist()
    assert tokenizer(ours.text, add_special_tokens=False)["input_ids"] == expected or ours.text == tokenizer.decode(expected)
    assert configured[0, ids.shape[1]:].tolist() != expected  # the test can fail: the config does change greedy
    assert model.generation_config.repetition_penalty == 5.0  # the model's own config is left as it was


def test_unsloth_without_vllm_shrinks_its_batch_for_sampled_evaluations():
    """Without vLLM, Unsloth's evaluations run aha's batched HF generation: k samples per prompt multiply each
    batch by k, so the batch (counted in prompts) shrinks by k as it does on the hf backend."""
    from aha.eval.backends import prompts_per_batch_for
    from aha.recipes.api import load_recipe
    from aha.recipes.training.unsloth_backend import UnslothBackend, _ModelGenerator

    owner = object.__new__(UnslothBackend)  # its __init__ loads a model on a GPU; the generator needs its recipe
    owner.recipe, owner.tokenizer = load_recipe("tiny-qwen3-smoke", {"eval.batch_size": 32}), None
    generator = _ModelGenerator(owner, adapter=None)
    with prompts_per_batch_for(generator, 16):
        assert generator.batch_size == 2
    assert generator.batch_size == 32


def test_a_merged_export_is_written_at_the_precision_the_run_used(tiny_qwen3, tmp_path):
    """Unsloth's merged saver keeps the checkpoint's dtype (a bfloat16 hub checkpoint on a T4 that ran at
    float16): the export is rewritten at the run's precision, its config saying so, its values the cast ones."""
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from aha.recipes.training.unsloth_backend import cast_saved_weights

    folder = tmp_path / "merged"
    AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.bfloat16).save_pretrained(folder)
    saved = load_file(str(folder / "model.safetensors"))
    cast_saved_weights(folder, "float16")
    cast = load_file(str(folder / "model.safetensors"))
    assert {t.dtype for t in cast.values()} == {torch.float16}
    assert all(torch.equal(cast[k], saved[k].to(torch.float16)) for k in saved)
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    assert AutoModelForCausalLM.from_pretrained(folder, dtype="auto").dtype == torch.float16


def test_each_stage_records_its_peak_gpu_memory(monkeypatch):
    """What only a GPU has is patched (CUDA and its allocator's counters); the figures go to the log line,
    state.json (through the stage's result) and the report's stage table."""
    import torch

    from aha.recipes.stages import memory as runner
    from aha.recipes.stages.report import stage_rows

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 9 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: 12.5 * 2**30)
    runner.reset_gpu_peaks()
    peaks = {"peak_memory_gib": 3.1, **runner.gpu_peaks()}
    assert peaks == {"peak_memory_gib": 3.1, "peak_gpu_allocated_gib": 9.0, "peak_gpu_reserved_gib": 12.5}
    assert runner.memory_line(peaks) == "peak memory 3.10 GiB; GPU 9.00 GiB allocated, 12.50 GiB reserved"
    assert stage_rows({"grpo": {"seconds": 10, **peaks, "steps": 2}, "sft": {"seconds": 3, "peak_memory_gib": 1}}) == [
        "| grpo | 10 | 3.1 | 9.0 / 12.5 | steps 2 |", "| sft | 3 | 1 | no GPU |  |"]
