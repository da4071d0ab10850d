"""Rejection-sampling fine-tuning in GRPO's place (grpo.trainer: rft): planned in GRPO's slot,
refused where it cannot run, and run end to end on a real model (SmolLM2-135M-Instruct finishes
its answers, so rounds keep completions and train on them), resumable like every stage."""

import json
import shutil
from pathlib import Path

import pytest

from aha.recipes.cli import main
from aha.recipes.config import RecipeError
from aha.recipes.config.load import recipe_from_dict
from aha.recipes.stages.table import final_adapter, plan

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = {"model": {"name": "builtin:tiny-qwen3"}}


def test_rft_takes_grpos_place_and_what_follows_evaluates_its_adapter(tmp_path):
    recipe = recipe_from_dict({**TINY, "grpo": {"trainer": "rft"}})
    assert plan(recipe)[3:6] == ["preflight", "rft", "eval-after"]
    assert final_adapter(tmp_path, recipe) == str(tmp_path / "rft" / "adapter")
    assert "grpo" in plan(recipe_from_dict(TINY)) and "rft" not in plan(recipe_from_dict(TINY))
    assert plan(recipe_from_dict({**TINY, "grpo": {"trainer": "rft", "enabled": False}}))[-3:] == [
        "verify-export", "publish", "report"]


@pytest.mark.parametrize("overrides, message", [
    ({"grpo": {"trainer": "ppo"}}, "grpo.trainer must be one of grpo, rft, not 'ppo'"),
    ({"rft": {"rounds": 0}}, "rft.rounds must be >= 1, not 0"),
    ({"rft": {"max_seconds": -1.0}}, "rft.max_seconds must be > 0"),
    ({"rft": {"min_reward": "high"}}, "rft.min_reward: expected a number"),
    ({"rft": {"round": 2}}, "unknown key 'rft.round'"),
])
def test_bad_rft_settings_are_one_line(overrides, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        recipe_from_dict({**TINY, **overrides})


def test_rft_under_a_multi_process_launch_is_refused():
    with pytest.raises(RecipeError, match="grpo.trainer rft runs on one process, and this launch has 2"):
        recipe_from_dict({**TINY, "grpo": {"trainer": "rft"}}, processes=2)


def test_the_dapo_rft_recipe_dry_runs_offline(capsys):
    """qwen3-4b-dapo-rft, with a local model in place of the hub's Qwen3-4B and the hf backend this CPU has."""
    assert main(["run", "qwen3-4b-dapo-rft", "--dry-run", "--set", "model.name=builtin:tiny-qwen3", "--set",
                 "model.backend=hf", "--set", "export.gguf=null"]) == 0
    out = capsys.readouterr().out
    assert "preflight -> rft -> eval-after" in out and "grpo: dapo-math, shipped (95 problems" in out


def test_the_rft_recipes_change_only_the_trainer_and_its_budget():
    import yaml

    for base, rft in [("smollm2-135m-arith-cpu", "smollm2-135m-arith-rft"), ("qwen3-4b-dapo", "qwen3-4b-dapo-rft")]:
        a, b = (yaml.safe_load((RECIPES / f"{n}.yaml").read_text()) for n in (base, rft))
        assert b["grpo"].pop("trainer") == "rft" and "rft" in b and b.pop("name") == rft
        b.pop("rft"), a.pop("name")
        assert a == b, f"{rft} differs from {base} beyond grpo.trainer and the rft section"


def test_one_warmup_and_preflight_serve_both_trainers(tmp_path):
    """A folder of the main job stopped after its preflight resumes as the RFT recipe (the trainer, the name and
    the rft section are read by no stage that ran), so GRPO and RFT can start from the same warmup; a change to
    what the preflight did read, or a trainer change once GRPO ran, is refused."""
    from aha.recipes.api import load_recipe
    from aha.recipes.stages.runner import Run

    run = Run(load_recipe("smollm2-135m-arith-cpu"), tmp_path)
    for stage in ("eval-before", "sft", "eval-after-sft", "preflight"):
        run.finish(stage, 1.0, {})
    assert Run(load_recipe("smollm2-135m-arith-rft"), tmp_path).changed == [
        "grpo.trainer", "name", "rft.max_seconds", "rft.rounds"]
    with pytest.raises(RecipeError, match=r"grpo.temperature changed after stages that read it ran"):
        Run(load_recipe("smollm2-135m-arith-rft", overrides={"grpo.temperature": 0.5}), tmp_path)
    run = Run(load_recipe("smollm2-135m-arith-cpu"), tmp_path)
    run.finish("grpo", 1.0, {})
    with pytest.raises(RecipeError, match=r"grpo.trainer changed after stages that read it ran"):
        Run(load_recipe("smollm2-135m-arith-rft"), tmp_path)


@pytest.mark.slow
def test_rft_runs_rounds_keeps_what_passes_and_resumes(tmp_path, recipe_reads, stage_checks, capsys):
    out = tmp_path / "run"
    recipe = RECIPES / "smollm2-135m-arith-rft.yaml"
    small = ["eval.enabled=false", "export.verify=false", "grpo.preflight=off", "grpo.select=all",
             "grpo.num_prompts=4", "grpo.num_generations=4", "grpo.max_completion_length=48", "rft.rounds=2",
             "rft.prompts_per_round=3", "rft.max_steps=1", "rft.min_reward=-100", "sft.enabled=false",
             "export.merged=false", "rft.max_seconds=null"]
    args = ["run", str(recipe), "--out", str(out)] + [x for o in small for x in ("--set", o)]
    assert main(args) == 0
    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"])[0] == "rft" and not {"sft", "grpo"} & set(state["stages"])  # a fresh LoRA
    report = json.loads((out / "rft" / "rft.json").read_text())
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["completions"] == 12 and r["prompts"] == 3 for r in rounds)
    assert any(r["kept"] for r in rounds), "no finished completion in two rounds of 12"
    for r in rounds:
        kept = json.loads((out / "rft" / f"round-{r['round']}" / "kept.json").read_text())
        assert len(kept["examples"]) == r["kept"] <= r["prompts"]  # rft.max_per_prompt 1
        assert (r["steps"] == 1) == bool(r["kept"])
    assert (out / "rft" / "adapter" / "adapter_config.json").is_file()
    assert "## Rejection-sampling fine-tuning (in GRPO's place)" in (out / "report.md").read_text()
    card = (out / "export" / "adapter" / "README.md").read_text()
    assert "## Rejection-sampling fine-tuning" in card and "- rft" in card  # the section and the card's tag
    assert stage_checks.undeclared_files(out) == []
    from aha.recipes import load_recipe

    assert stage_checks.undeclared_reads(recipe_reads, load_recipe(recipe, small)) == []
    # A run killed in round 2's fine-tune, after its sampling: the resume trains on the same examples.
    second = out / "rft" / "round-2"
    before = json.loads((second / "kept.json").read_text())
    shutil.rmtree(out / "rft" / "adapter")
    shutil.rmtree(second / "adapter", ignore_errors=True)
    (second / "kept.json").write_text(json.dumps({**before, "counts": {
        k: v for k, v in before["counts"].items() if k not in ("seconds", "steps")}}))
    state["stages"] = {}
    (out / "state.json").write_text(json.dumps(state))
    assert main(args) == 0
    after = json.loads((second / "kept.json").read_text())
    assert after["examples"] == before["examples"] and (out / "rft" / "adapter" / "adapter_config.json").is_file()
    assert "rft" in json.loads((out / "state.json").read_text())["stages"]
