"""The first GPU run succeeds: every shipped GPU recipe rehearsed whole on a CPU (its model's twin, the
counts cut, every length, template and generation setting as the GPU run has them), length limits
found before anything loads, and the breaks between parts that a GPU run would meet first."""

import json
from pathlib import Path

import pytest

from aha.eval.files import LOCK_FILE
from aha.recipes.cli import main

GPU_RECIPES = ["qwen2.5-0.5b-gsm8k", "qwen2.5-1.5b-gsm8k", "qwen2.5-3b-gsm8k", "qwen3-4b-dapo", "qwen3-4b-dapo-rft"]


@pytest.mark.parametrize("recipe", GPU_RECIPES)
def test_every_shipped_gpu_recipe_passes_its_own_dry_run(recipe, capsys):
    """Each evaluation task's longest prompt plus eval.max_new_tokens fits the engine the GPU run sizes to
    model.max_seq_length, and GRPO's longest prompt plus its completion fits max_seq_length (fails on the
    values shipped before: MATH-500's 826-token prompt + 768 > 1024, DAPO-Math's 614 + 1536 > 2048)."""
    assert main(["run", recipe, "--rehearse", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DOES NOT FIT" not in out
    lengths = [line for line in out.splitlines() if line.startswith("  fits: ")]
    assert any(line.startswith("  fits: grpo: its longest kept prompt is ") for line in lengths)
    tasks = [line for line in lengths if line.startswith("  fits: eval.tasks[")]
    assert len(tasks) == (2 if "gsm8k" in recipe else 5) and all("(the vLLM engine" in line for line in tasks)


def test_a_length_that_does_not_fit_is_refused_before_anything_loads(tmp_path, capsys):
    """The same check on a run (not only on --dry-run): one line naming the task, its longest problem and the
    values that would fit, and nothing written."""
    args = ["run", "qwen2.5-0.5b-gsm8k", "--rehearse", "--set", "model.max_seq_length=1024", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aha: error: eval.tasks[1] math500: its longest prompt (math500-test/prealgebra/1044.json) "
                          "is 826 tokens, plus eval.max_new_tokens 768 makes 1594, over the 1024 tokens the vLLM engine")
    assert err.endswith("set model.max_seq_length >= 1594 or eval.max_new_tokens <= 198") and "\n" not in err
    assert not (tmp_path / "r").exists()
    assert main(["run", "qwen2.5-0.5b-gsm8k", "--rehearse", "--dry-run", "--set", "model.max_seq_length=1024"]) == 2
    out = capsys.readouterr().out
    assert "  DOES NOT FIT: eval.tasks[1] math500" in out and "  fits: eval.tasks[0] gsm8k" in out


def test_a_recipe_without_a_twin_is_refused(capsys):
    assert main(["run", "tiny-qwen3-smoke", "--rehearse", "--dry-run"]) == 2
    assert "--rehearse: 'builtin:tiny-qwen3' has no twin here" in capsys.readouterr().err


@pytest.mark.parametrize("name, penalty, eos", [("qwen2.5-0.5b-instruct", 1.1, "<|im_end|>"),
                                                 ("qwen2.5-3b-instruct", 1.05, "<|im_end|>"),
                                                 ("qwen3-4b-base", None, "<|endoftext|>")])
def test_a_twin_has_its_models_published_facts(name, penalty, eos, tmp_path, qwen3_tokenizer):
    """The real architecture (cut down), the real generation_config.json and tokenizer_config.json; the text
    tokenises as the shared Qwen vocabulary does."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from aha.recipes.training.models import build_twin

    folder = build_twin(name, tmp_path / name)
    facts = Path(__file__).resolve().parents[1] / "recipes" / "twins" / name
    assert (folder / "generation_config.json").read_bytes() == (facts / "generation_config.json").read_bytes()
    assert GenerationConfig.from_pretrained(folder).repetition_penalty == penalty
    config, real = AutoConfig.from_pretrained(folder), json.loads((facts / "config.json").read_text())
    assert (config.model_type, config.vocab_size, config.rope_theta if hasattr(config, "rope_theta") else
            config.rope_parameters["rope_theta"], config.tie_word_embeddings) == (
        real["model_type"], real["vocab_size"], real["rope_theta"], real["tie_word_embeddings"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == eos
    text = "Natalia sold 48/2 = <<48/2=24>>24 clips in May. \\boxed{72}"
    assert tokenizer(text)["input_ids"] == qwen3_tokenizer(text)["input_ids"]
    if name.startswith("qwen2.5"):  # its own chat template: the default system prompt, no <think> token
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
        assert prompt.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
        assert "<think>" not in tokenizer.get_vocab()


def _check_rehearsed(recipe: str, out: Path) -> None:
    """Every stage of the recipe's plan finished, the report and the merged export written, and every
    evaluation ran on the vLLM engine to the recipe's own max_new_tokens (random weights never stop early)."""
    from aha.eval import metrics as names
    from aha.recipes.api import load_recipe
    from aha.recipes.stages.table import plan

    rehearsal = load_recipe(recipe, rehearse=True)
    state = json.loads((out / "state.json").read_text())
    assert [s for s in plan(rehearsal) if s not in state["stages"]] == []
    assert (out / "report.md").is_file() and (out / "export" / "merged" / "config.json").is_file()
    assert json.loads((out / "export" / "verification.json").read_text())["passed"] is True
    for stage in ("eval-before", "eval-after-sft", "eval-after"):
        for task in (t.task for t in rehearsal.eval.tasks):
            summary = json.loads((out / stage / task / "summary.json").read_text())
            assert summary["config"]["backend"] == "vllm", (stage, task)
            assert summary["results"][names.TRUNCATION_RATE] == 1.0, (stage, task)  # all max_new_tokens generated


@pytest.mark.slow
@pytest.mark.first
def test_the_dapo_recipes_run_whole_in_their_rehearsals(tmp_path):
    """qwen3-4b-dapo and qwen3-4b-dapo-rft, each whole. The RFT recipe differs only in its trainer, so it starts
    from the GRPO recipe's rehearsal stopped after its preflight (a run stopped there resumes as the RFT recipe,
    the resume check refusing any other change): both share one warmup, as the comparison of the two does."""
    import shutil

    grpo, rft = tmp_path / "grpo", tmp_path / "rft"
    assert main(["run", "qwen3-4b-dapo", "--rehearse", "--out", str(grpo), "--stop-after", "preflight"]) == 0
    shutil.copytree(grpo, rft)
    (rft / LOCK_FILE).unlink(missing_ok=True)
    assert main(["run", "qwen3-4b-dapo", "--rehearse", "--out", str(grpo)]) == 0
    _check_rehearsed("qwen3-4b-dapo", grpo)
    assert main(["run", "qwen3-4b-dapo-rft", "--rehearse", "--out", str(rft)]) == 0
    _check_rehearsed("qwen3-4b-dapo-rft", rft)
    assert (rft / "rft" / "round-1" / "kept.json").is_file() and not (rft / "grpo").exists()


@pytest.mark.slow
@pytest.mark.first
@pytest.mark.parametrize("recipe", [r for r in GPU_RECIPES if "gsm8k" in r])
def test_every_shipped_gsm8k_recipe_runs_whole_in_its_rehearsal(recipe, tmp_path):
    """Every stage of the recipe, as shipped except the counts, on its model's twin; evaluation on vLLM's
    CPU build sized as the GPU run's engine, on each task's longest prompt with the recipe's own
    max_new_tokens, the export merged and verified in a fresh process."""
    out = tmp_path / "run"
    assert main(["run", recipe, "--rehearse", "--out", str(out)]) == 0
    _check_rehearsed(recipe, out)
