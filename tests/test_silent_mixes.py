"""Three ways a run mixed things without a word, each refused or fixed now: a training task with
no training rows (GRPO trained on another task's), a resume that changed how the sampled
evaluations sample (the comparison paired two samplers), and a length penalty that never got
the length it penalises."""

import json

from aha.recipes.api import load_recipe
from aha.recipes.cli import main


def test_a_task_without_training_rows_is_refused(capsys):
    for overrides, message in [(["data.task=math500"], "data.task must be one of gsm8k, dapo-math, arith, not 'math500'"),
                               (["sft.task=dapo-math"], "sft.task must be one of gsm8k, arith, not 'dapo-math'"),
                               (["data.task=dapo-math"], "sft: dapo-math has no worked solutions; set sft.task to one "
                                                         "that has (gsm8k, arith)")]:
        argv = ["run", "tiny-qwen3-smoke", "--dry-run"]
        for item in overrides:
            argv += ["--set", item]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_training_and_evaluation_read_tasks_through_one_loader():
    """The task table says which tasks train; asking a test-only task for training rows is an
    error where it is loaded, not a silent fall-through to another task's rows."""
    import pytest

    from aha.eval import load_task
    from aha.formats import InputError

    assert len(load_task("arith", split="train", n=5)) == 5
    assert len(load_task("dapo-math", split="train")) == 95
    with pytest.raises(InputError, match="math500 has no training rows"):
        load_task("math500", split="train")


def test_the_sampled_evaluations_read_grpos_sampling():
    from aha.recipes.stages.table import EVAL_AFTER_SFT, PREFLIGHT, first_reader

    sampled = load_recipe("tiny-qwen3-smoke")
    assert sampled.eval.sampled_k and first_reader("grpo.temperature", sampled) is EVAL_AFTER_SFT
    greedy = load_recipe("tiny-qwen3-smoke", overrides={"eval.sampled_k": 0})
    assert first_reader("grpo.temperature", greedy) is PREFLIGHT  # nothing before the preflight samples then
    assert first_reader("grpo.learning_rate", sampled) is PREFLIGHT


def test_a_resume_that_changes_the_sampler_is_refused(tmp_path, capsys):
    """After eval-after-sft sampled at GRPO's temperature, a resume at another temperature would
    pair two samplers in the sampled comparison: refused in one line."""
    out = tmp_path / "run"
    assert main(["run", "tiny-qwen3-smoke", "--out", str(out), "--stop-after", "eval-after-sft"]) == 0
    summary = json.loads((out / "eval-after-sft" / "arith-l1-sampled" / "summary.json").read_text())
    assert summary["config"]["sampling"]["temperature"] == load_recipe("tiny-qwen3-smoke").grpo.args.temperature
    capsys.readouterr()
    assert main(["run", "tiny-qwen3-smoke", "--out", str(out), "--set", "grpo.temperature=0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a run of a different recipe (grpo.temperature changed after stages that read it ran)" in err
    assert "\n" not in err


def test_truncation_penalty_gets_grpos_completion_length():
    from aha.formats import get_format
    from aha.recipes.training.trainers import reward_functions

    recipe = load_recipe("tiny-qwen3-smoke", overrides={"grpo.rewards": [{"name": "truncation_penalty"}]})
    (penalty,), _ = reward_functions(recipe, get_format(recipe.format), "<|im_end|>", 16)
    assert penalty(["a", "b"], completion_ids=[[1] * 5, [1] * 16]) == [0.0, -1.0]
    (own,), _ = reward_functions(load_recipe("tiny-qwen3-smoke", overrides={"grpo.rewards": [
        {"name": "truncation_penalty", "options": {"max_completion_length": 5}}]}), get_format(recipe.format), None, 16)
    assert own(["a", "b"], completion_ids=[[1] * 5, [1] * 4]) == [-1.0, 0.0]  # the recipe's own option wins
