"""Recipes: validation before any model loads, the smoke recipe end to end, stop and continue (kills: test_faults.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aha.recipes.cli import main
from aha.recipes.api import load_recipe
from aha.recipes.config.load import recipe_from_dict
from aha.recipes.stages.table import plan
from aha.recipes.config.schema import RecipeError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SMOKE = RECIPES / "tiny-qwen3-smoke.yaml"
SHIPPED = sorted(RECIPES.glob("*.yaml"))


# ----- the schema for editors ------------------------------------------------------------------
def test_the_shipped_json_schema_is_the_schemas_and_checks_recipes(capsys):
    import jsonschema

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert json.loads((RECIPES / "recipe.schema.json").read_text()) == schema, "rewrite it: aha schema > recipes/..."
    for path in SHIPPED:
        assert path.read_text().startswith("# yaml-language-server: $schema=recipe.schema.json\n"), path.name
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    # What the loader refuses, an editor flags too; what it takes beyond the dataclasses, the schema takes.
    for wrong in ({"lora": {"r": "16"}}, {"model": {"nam": "x"}}, {"grpo": {"preflight": "maybe"}},
                  {"eval": {"tasks": [{"limit": 0}]}}, {"grpo": {"rewards": [{"weight": 1}]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)
        with pytest.raises(RecipeError):
            recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, **wrong})
    right = {"grpo": {"learning_rate": 1e-5, "rewards": ["format_exact", {"name": "reward_model", "model": "m"}]}}
    jsonschema.validate(right, schema)
    assert "source_dir" not in schema["properties"] and "args" not in schema["$defs"]["GRPOStage"]["properties"]


# ----- validation (fast: nothing loads a model) -------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipes_validate(path, tmp_path, monkeypatch, tiny_qwen3):
    # Hub models are not reachable offline; the model is the only thing swapped (for a local model folder), and
    # GGUF export finds the llama.cpp a user points Unsloth at (offline it is refused without one).
    llama_cpp = tmp_path / "llama.cpp"
    llama_cpp.mkdir()
    for tool in ("llama-quantize", "convert_hf_to_gguf.py"):
        (llama_cpp / tool).write_text("")
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", str(llama_cpp))
    recipe = load_recipe(path, [f"model.name={tiny_qwen3}"])
    assert recipe.name == path.stem
    assert plan(recipe)[-1] == "report"
    data = yaml.safe_load(path.read_text())
    if data["grpo"].get("enabled", True):
        # What the anchors leave to hidden library defaults is written out in every recipe.
        for key in ("loss_type", "beta", "num_generations", "per_device_train_batch_size", "temperature", "min_p",
                    "learning_rate", "max_completion_length"):
            assert key in data["grpo"], f"{path.name}: grpo.{key} is left to a library default"
        if data["model"].get("backend") == "unsloth" or data["model"].get("use_vllm"):  # rollouts from vLLM
            for key in ("vllm_importance_sampling_correction", "vllm_importance_sampling_mode"):
                assert key in data["grpo"], f"{path.name}: grpo.{key} is left to a library default"


def test_qwen3_4b_recipe_matches_the_unsloth_reference():
    g = yaml.safe_load((RECIPES / "qwen3-4b-dapo.yaml").read_text())
    assert g["model"]["name"] == "unsloth/Qwen3-4B-Base" and g["model"]["max_seq_length"] == 2048
    assert g["lora"]["r"] == 32 and g["lora"]["alpha"] == 64 and g["seed"] == 3407
    grpo = g["grpo"]
    assert (grpo["num_generations"], grpo["learning_rate"], grpo["weight_decay"], grpo["max_steps"]) == (4, 5e-6, 0.001, 100)
    assert (grpo["temperature"], grpo["min_p"], grpo["top_p"], grpo["loss_type"], grpo["beta"]) == (1.0, 0.1, 1.0, "dapo", 0.0)
    assert grpo["prompt_percentile"] == 90 and grpo["max_completion_length"] == "auto"  # 2048 - longest kept prompt
    assert [r["name"] for r in grpo["rewards"]] == ["format_exact", "format_approximate", "check_answer_numeric",
                                                    "check_number"]
    assert {t["task"] for t in g["eval"]["tasks"]} == {"dapo-math", "math500", "aime24", "aime25", "amc23"}
    assert all(t.get("k", 1) > 1 for t in g["eval"]["tasks"] if t["task"] in ("aime24", "aime25", "amc23"))


@pytest.mark.parametrize("overrides, message", [
    (["sft.learning_rat=1e-4"], "unknown key 'sft.learning_rat'"),
    (["grpo.num_generations=four"], "grpo.num_generations: expected an integer"),
    (["model.name=./no/such/folder"], "no such model folder"),
    (["grpo.rewards=[{name: check_anwser}]"], "unknown reward 'check_anwser'"),
    (["grpo.output_dir=/tmp/x"], "set by the runner"),
    (["lora.rank=8"], "unknown key 'lora.rank'"),
    (["model.backend=tpu"], "model.backend must be one of"),
    (["eval.tasks=[{task: mmlu}]"], "eval.tasks[0].task must be one of"),
    (["grpo.rewards=[{name: length_penalty, options: {bogus: 1}}]"], "has no option"),
    (["export.gguf=q4_k_m"], "export.gguf needs backend unsloth"),
    (["grpo.loss_type=nonsense"], "grpo.loss_type must be one of"),
    (["sft.max_steps=1.5"], "sft.max_steps: expected an integer"),
    (["model.name"], "--set takes key=value"),
])
def test_bad_recipes_fail_with_one_line(overrides, message, capsys):
    argv = ["run", str(SMOKE), "--dry-run"]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aha: error:") and message in err and "\n" not in err


def test_bad_recipe_files(tmp_path, capsys):
    (tmp_path / "list.yaml").write_text("- just\n- a list\n")
    (tmp_path / "broken.yaml").write_text("model: {name: [\n")
    for name, message in [("list.yaml", "a recipe is a mapping"), ("broken.yaml", "not valid YAML"),
                          ("missing.yaml", "no such recipe")]:
        assert main(["run", str(tmp_path / name), "--dry-run"]) == 2
        assert message in capsys.readouterr().err


def test_the_dapo_recipe_dry_runs_offline_on_the_shipped_data(capsys):
    """qwen3-4b-dapo's data is shipped: offline, its dry run (with a local model in place of the
    hub's Qwen3-4B and the hf backend this CPU machine has) names where each stage's problems
    come from, with their counts; the full hub set is one value away."""
    args = ["run", "qwen3-4b-dapo", "--dry-run", "--set", "model.name=builtin:tiny-qwen3", "--set", "model.backend=hf",
            "--set", "export.gguf=null"]
    assert main(args) == 0
    data = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("data: "))
    assert "grpo: dapo-math, shipped (95 problems; data.hub: true reads open-r1/DAPO-Math-17k-Processed)" in data
    assert "eval: dapo-math (200 problems), math500 (500 problems)" in data
    assert main(args + ["--set", "data.task=arith", "--set", "data.hub=true", "--set", "sft.task=arith"]) == 2
    assert "data.hub: arith is generated" in capsys.readouterr().err


def test_dry_run_prints_the_plan(capsys):
    assert main(["run", "tiny-qwen3-smoke", "--dry-run"]) == 0  # a shipped recipe by name
    out = capsys.readouterr().out
    assert ("eval-before -> sft -> eval-after-sft -> preflight -> grpo -> eval-after -> compare -> export -> "
            "verify-export -> publish -> report" in out)


def test_plan_follows_the_recipe():
    base = {"model": {"name": "builtin:tiny-qwen3"}}
    assert plan(recipe_from_dict({**base, "sft": {"enabled": False}})) == [
        "eval-before", "preflight", "grpo", "eval-after", "compare", "export", "verify-export", "publish", "report"]
    assert plan(recipe_from_dict({**base, "eval": {"enabled": False}, "grpo": {"preflight": "off"}})) == [
        "sft", "grpo", "export", "publish", "report"]
    assert plan(recipe_from_dict({**base, "sft": {"enabled": False}, "grpo": {"enabled": False}})) == [
        "eval-before", "report"]
    with pytest.raises(RecipeError, match="at least one reward"):
        recipe_from_dict({**base, "grpo": {"rewards": []}})


def test_unsloth_backend_without_gpu_is_one_line(tmp_path, capsys, tiny_qwen3):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    # Unsloth cannot load our built-in models at all: refused at validation, on any machine.
    assert main(["run", str(SMOKE), "--out", str(tmp_path / "run"), "--set", "model.backend=unsloth"]) == 2
    assert "model.backend unsloth cannot load builtin:tiny-qwen3" in capsys.readouterr().err
    # A model folder it could load, on a machine without CUDA.
    assert main(["run", str(SMOKE), "--out", str(tmp_path / "run"), "--set", "model.backend=unsloth",
                 "--set", f"model.name={tiny_qwen3}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a CUDA GPU" in err and "\n" not in err
    assert not (tmp_path / "run").exists()  # refused before the run folder or any model was made


def test_auto_backend_never_picks_unsloth_for_our_own_models():
    from aha.recipes.config.schema import ModelConfig
    from aha.recipes.config.machine import pick_backend

    assert pick_backend("auto", ModelConfig(name="builtin:smollm2-135m-instruct")) == "hf"
    assert pick_backend("auto", ModelConfig(name="some/folder", gguf_file="m.gguf")) == "hf"


def test_training_data_never_contains_evaluation_problems():
    from aha.eval.tasks import normalize_question
    from aha.recipes.training.data import eval_problems, training_problems

    recipe = recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, "data": {"task": "arith", "num_train": 3000},
                               "eval": {"tasks": [{"task": "arith", "limit": 200}]}})
    train = training_problems(recipe)
    held = {normalize_question(p.question) for ps in eval_problems(recipe).values() for p in ps}
    assert len(held) == 200 and len(train) < 3000  # some generated questions collided and were dropped
    assert not held & {normalize_question(p.question) for p in train}


def test_sft_rows_use_the_evaluation_prompt(qwen3_tokenizer):
    from aha.formats import get_format
    from aha.recipes.training.data import grpo_rows, sft_rows, training_problems

    recipe = recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, "data": {"num_train": 50},
                               "sft": {"num_examples": 10}, "grpo": {"num_prompts": 20}})
    fmt = get_format("unsloth")
    problems = training_problems(recipe)
    rows = sft_rows(recipe, fmt, qwen3_tokenizer, problems)
    assert len(rows) == 10
    assert rows[0]["prompt"] == fmt.build_prompt(qwen3_tokenizer, problems[0].question)
    assert fmt.check_format(rows[0]["completion"]) and fmt.extract_answer(rows[0]["completion"]) == problems[0].answer
    prompts, longest = grpo_rows(recipe, fmt, qwen3_tokenizer, problems)
    assert 0 < len(prompts) <= 20 and longest == max(len(qwen3_tokenizer(r["prompt"])["input_ids"]) for r in prompts)


# ----- end to end (slow) ------------------------------------------------------------------------------
def _aha(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from aha.recipes.cli import main; sys.exit(main())", *args]


@pytest.mark.slow
def test_smoke_recipe_end_to_end(tmp_path, recipe_reads, stage_checks, tiny_adapter, capsys):
    out = tmp_path / "run"
    assert main(["run", str(SMOKE), "--out", str(out)]) == 0
    # Each stage read only recipe values its record (or an earlier stage's) declares, so the resume check guards every
    # value a finished stage's results depend on; every file in the run folder is one a stage (or the runner) declares.
    assert set(recipe_reads) >= {"eval-before", "sft", "eval-after-sft", "preflight", "grpo", "eval-after"}
    assert "grpo.temperature" in recipe_reads["eval-after-sft"] and "grpo.rewards" in recipe_reads["grpo"]
    assert stage_checks.undeclared_reads(recipe_reads, load_recipe(SMOKE)) == []
    assert stage_checks.undeclared_files(out) == []
    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"]) == ["eval-before", "sft", "eval-after-sft", "preflight", "grpo", "eval-after",
                                     "compare", "export", "verify-export", "publish", "report"]
    assert state["stages"]["grpo"]["steps"] == 4 and state["stages"]["sft"]["steps"] == 4
    for stage in ("eval-before", "eval-after-sft", "eval-after"):
        summary = json.loads((out / stage / "arith-l1" / "summary.json").read_text())
        assert summary["results"]["problems"] == 8
    assert json.loads((out / "eval-after" / "arith-l1" / "summary.json").read_text())["config"]["adapter"] == str(
        out / "grpo" / "adapter")
    for label in ("overall", "sft", "grpo"):
        assert (out / "compare" / "arith-l1" / label / "compare.md").is_file()
    report = (out / "report.md").read_text()
    assert "## Paired comparisons" in report and "reward_curves.png" in report and (out / "reward_curves.png").is_file()
    history = json.loads((out / "grpo" / "log_history.json").read_text())
    assert any("rewards/check_answer_numeric/mean" in row for row in history)  # per-layer reward logging
    assert any("answer_pass" in row for row in history)  # the pass rate, logged through TRL's log_metric
    # The preflight ran on the SFT policy with GRPO's sampling, found the random model cannot learn, and went on
    # (the smoke recipe says preflight: warn); its findings are in the report.
    pre = json.loads((out / "preflight" / "preflight.json").read_text())
    assert pre["stats"]["prompts"] == 4 and pre["stats"]["group_size"] == 4
    assert pre["sampling"]["temperature"] == 1.0 and pre["sampling"]["max_new_tokens"] == 16
    assert {v["code"] for v in pre["verdicts"] if v["level"] == "fatal"} and (out / "preflight" / "preflight.png").is_file()
    assert "## GRPO preflight" in report and "## Sampled accuracy at GRPO's temperature" in report
    from aha.recipes.stages.table import read_run

    sampled = read_run(out).sampled["arith-l1-sampled/grpo"]
    assert sampled["k"] == 2 and sampled["problems"] == 8

    # The export: the adapter, and merged weights that give the adapter's outputs.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    merged = AutoModelForCausalLM.from_pretrained(out / "export" / "merged", dtype=torch.float32)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "base", dtype=torch.float32),
                                     out / "export" / "adapter")
    with torch.no_grad():
        gap = (merged(ids).logits - peft(ids).logits).abs().max().item()
    assert merged.dtype == torch.float32 and gap < 1e-4  # saved at the precision evaluated: the same arithmetic

    # The exports were loaded as a user loads them and answer as the evaluated adapter did, text for text.
    verification = json.loads((out / "export" / "verification.json").read_text())
    assert verification["passed"] and set(verification["artifacts"]) == {"adapter", "merged"}
    for artifact in verification["artifacts"].values():
        assert artifact["problems"] == artifact["identical_texts"] == 8 and artifact["differences"] == []
        assert artifact["precision"] == "same"
    assert "## Export verification" in report
    # The model card, in the Hub's own format: huggingface_hub reads it back, metrics included.
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "export" / "adapter" / "README.md")
    assert card.data.library_name == "peft" and "grpo" in card.data.tags and "format_exact" in card.data.tags
    after = {(r.dataset_name, r.metric_name): r.metric_value for r in card.data.eval_results}
    reported = json.loads((out / "eval-after" / "arith-l1" / "summary.json").read_text())["results"]["accuracy_strict"]
    assert after[("arith-l1", "strict accuracy after (tiny-qwen3-smoke)")] == round(reported, 4)
    assert "## Export verification" in card.text and "aha_recipe.yaml" in card.text
    assert (out / "export" / "adapter" / "aha_recipe.yaml").is_file()
    merged_card = ModelCard.load(out / "export" / "merged" / "README.md")
    assert merged_card.data.library_name == "transformers"
    own = {r.metric_name: r.metric_value for r in merged_card.data.eval_results}  # the export's own number, beside
    measured = verification["artifacts"]["merged"]  # the adapter's
    assert own["strict accuracy of this merged, first 8 problems (verify-export)"] == round(measured["strict_export"], 4)
    assert "These weights, measured as shipped" in merged_card.text
    # The export-parity benchmark on this run (the demo model's figures are in the README): float32 merged weights
    # answer as the float32 adapter does, text for text.
    bench = subprocess.run([sys.executable, str(RECIPES.parent / "benchmarks" / "export_parity.py"), str(out),
                            "--problems", "8"], capture_output=True, text=True, check=True)
    assert "| merged, saved at float32 | 8 / 8 | 8 / 8 |" in bench.stdout and "merged, saved at bfloat16" in bench.stdout

    # Re-running the finished run does nothing; running a changed recipe into it is refused.
    assert main(["run", str(SMOKE), "--out", str(out)]) == 0
    assert json.loads((out / "state.json").read_text())["stages"]["grpo"] == state["stages"]["grpo"]
    assert main(["run", str(SMOKE), "--out", str(out), "--set", "grpo.max_steps=5"]) == 2

    # An export that does not behave like the adapter: the merged weights replaced by a merge of another adapter.
    # verify-export loads them as a user would, sees other answers and ends the run in one line; everything is kept,
    # the export is marked to be done again, and the next run exports from the trained adapter and passes.
    from aha.recipes.training.export import merge_adapter

    shutil.rmtree(out / "export" / "merged")
    merge_adapter(str(out / "base"), str(tiny_adapter), out / "export" / "merged", "float32")  # the wrong adapter
    capsys.readouterr()
    assert main(["run", str(SMOKE), "--out", str(out), "--from", "verify-export"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("aha: error: verify-export: export/merged does not behave like the adapter that was "
                          "evaluated") and "re-running exports again" in err
    done = json.loads((out / "state.json").read_text())["stages"]
    assert "export" not in done and "verify-export" not in done and (out / "export" / "adapter").is_dir()
    assert not json.loads((out / "export" / "verification.json").read_text())["passed"]
    assert main(["run", str(SMOKE), "--out", str(out)]) == 0
    assert json.loads((out / "export" / "verification.json").read_text())["passed"]
    assert stage_checks.undeclared_files(out) == []


def test_a_merge_that_answers_12_of_50_problems_differently_is_refused():
    """The main job's case before merges were saved at the evaluated precision: bfloat16 merged
    weights of a float32 run, 38 of 50 answers the same text and 48 the same verdict. The
    default thresholds refuse it, saying why; a 16-bit run's 16-bit merge with the same
    answers passes on its verdicts. Either way every differing text is listed with where it
    parts from the evaluated answer."""
    from aha.recipes.config.schema import ExportConfig
    from aha.recipes.stages.verify import compare_answers, judge, precision_class, thresholds

    def row(text, right):
        return {"samples": [{"text": text, "strict": right}]}

    ids = [f"p{i}" for i in range(50)]
    reference = {i: row(f"Compute: {n} + {n} = {2 * n}.", n % 3 == 0) for n, i in enumerate(ids)}
    exported = dict(reference)
    for n, i in enumerate(ids[:12]):  # 12 texts part after "Compute: "; the first two also change the verdict
        exported[i] = row(f"Compute: {n} x 2 = {2 * n}.", (n % 3 == 0) != (n < 2))
    result = compare_answers(reference, exported, ids)
    assert (result["identical_texts"], result["same_verdicts"]) == (38, 48)
    assert [(d["shared_chars"], d["export"][:1]) for d in result["differences"]] == [(len(f"Compute: {n} "), "x")
                                                                                     for n in range(12)]
    assert sum(not d["same_verdict"] for d in result["differences"]) == 2
    needs = thresholds(ExportConfig())
    kind, reason = precision_class("merged", "bfloat16", "float32")
    failure = judge("merged", dict(result), kind, reason, needs[kind])
    assert failure and "identical texts on 38 of 50 problems (needs 96%)" in failure and "saved at bfloat16" in failure
    kind, reason = precision_class("merged", "bfloat16", "bfloat16")
    assert (kind, judge("merged", dict(result), kind, reason, needs[kind])) == ("rounded", None)


def test_stop_after_then_continue(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", str(SMOKE), "--out", str(out), "--set", "sft.enabled=false", "--set", "grpo.enabled=false"]
    assert main(args + ["--stop-after", "nonsense"]) == 2
    assert "not a stage of this recipe" in capsys.readouterr().err
    # With nothing to train the plan is eval-before -> report; stop after the evaluation, then continue.
    assert main(args + ["--stop-after", "eval-before"]) == 0
    assert "stopped after eval-before" in capsys.readouterr().out
    assert list(json.loads((out / "state.json").read_text())["stages"]) == ["eval-before"]
    assert main(args) == 0
    assert list(json.loads((out / "state.json").read_text())["stages"]) == ["eval-before", "report"]


def test_a_changed_recipe_may_only_touch_what_no_finished_stage_read(tmp_path):
    from aha.recipes.stages.runner import Run

    def recipe(**sections):
        return recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, **sections})

    run = Run(recipe(), tmp_path)
    for stage in ("eval-before", "sft", "eval-after-sft"):
        run.finish(stage, 1.0, {})
    # GRPO's values may change (say, after the preflight stopped the run)...
    changed = Run(recipe(grpo={"learning_rate": 3e-5}), tmp_path)
    assert changed.changed == ["grpo.learning_rate"]
    # ...but not what a finished stage read: the data, the SFT settings, the evaluation tasks.
    for sections, key in [({"data": {"level": 2}}, "data.level"), ({"sft": {"num_examples": 9}}, "sft.num_examples"),
                          ({"eval": {"sampled_k": 4}}, "eval.sampled_k")]:
        with pytest.raises(RecipeError, match=rf"\({key} changed after stages that read it ran\)"):
            Run(recipe(grpo={"learning_rate": 3e-5}, **sections), tmp_path)
    # Re-opening with the accepted recipe is a plain resume.
    assert Run(recipe(grpo={"learning_rate": 3e-5}), tmp_path).changed == []
    # A folder an older aha wrote, with keys aha no longer has (the DAPO split's size), resumes as it is.
    state = json.loads((tmp_path / "state.json").read_text())
    state["recipe"]["data"]["heldout"] = 500
    state["recipe"]["eval"]["tasks"][0]["heldout"] = 500
    state["recipe_hash"] = "written-by-an-older-aha"
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert Run(recipe(grpo={"learning_rate": 3e-5}), tmp_path).changed == []


IMPORT_ORDER_SPY = """
import importlib.abc, json, sys
seen = {}
class Spy(importlib.abc.MetaPathFinder):  # records what was imported when unsloth is first looked for
    def find_spec(self, name, path, target=None):
        if name == "unsloth" and "first" not in seen:
            seen["first"] = sorted(m for m in ("transformers", "trl", "peft") if m in sys.modules)
        return None
sys.meta_path.insert(0, Spy())
import torch
torch.cuda.is_available = lambda: True  # as on a GPU machine: the recipe asks for unsloth and could get it
torch.cuda.set_device = lambda device: None  # validation builds TRL's config, which sets up "its" GPU
torch.cuda.get_device_capability = lambda device=None: (8, 0)  # the precision rule asks what the GPU can do
torch.cuda.get_device_name = lambda device=None: "NVIDIA A100"
from aha.recipes.cli import main
rc = main(["run", sys.argv[1], "--dry-run", "--set", "model.backend=unsloth", "--set", "model.name=" + sys.argv[2]])
print(json.dumps({"rc": rc, "seen": seen, "trl_loaded_after": "trl" in sys.modules}))
"""


def test_unsloth_is_looked_for_before_transformers_trl_and_peft(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", IMPORT_ORDER_SPY, str(SMOKE), str(folder)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["seen"] == {"first": []}, result  # nothing of transformers/TRL/PEFT imported yet
    assert result["trl_loaded_after"]  # validation did import TRL, afterwards


def test_python_api_loads_recipes_like_the_command():
    from aha.recipes import RecipeError as ApiError
    from aha.recipes import load_recipe as api_load

    recipe = api_load("tiny-qwen3-smoke", overrides={"grpo.max_steps": 2, "eval.tasks": [{"task": "arith", "limit": 3}],
                                                     "model.dtype": "float32"})
    assert recipe.grpo.trl["max_steps"] == 2 and recipe.eval.tasks[0].limit == 3 and recipe.model.dtype == "float32"
    with pytest.raises(ApiError, match=r"^grpo.num_prompts must be >= 1, not 0$"):
        api_load("tiny-qwen3-smoke", overrides={"grpo.num_prompts": 0})
    with pytest.raises(ApiError, match="no such recipe: nope"):
        api_load("nope")


def test_run_result_shows_the_report_tables(tmp_path):
    from aha.recipes import RunResult
    from aha.recipes.stages.results import RunResults

    metrics = {"problems": 10, "format_compliance": 1.0, "accuracy_strict": 0.5, "accuracy_lenient": 0.6,
               "accuracy_math_verify": 0.6, "truncation_rate": 0.0, "mean_completion_tokens": 12.0}
    pair = {m: {"before": 0.1, "after": 0.5, "fixed": 4, "broken": 0, "p_value": 0.125}
            for m in ("format_ok", "strict", "lenient")}
    results = RunResults(run_dir=tmp_path, evaluations={"eval-before": {"arith-l1": metrics}},
                         engines={"eval-before": {"arith-l1": "hf"}},
                         comparisons={"arith-l1/overall": {"problems": 10, "metrics": pair}},
                         exports={"adapter": str(tmp_path / "a")})
    shown = RunResult(tmp_path, ["eval-before"], exports=results.exports, results=results)._repr_markdown_()
    assert "| eval-before | arith-l1 | hf | 10 | 100.0% | 50.0% |" in shown
    assert "| arith-l1/overall | strict | 10.0% | 50.0% | 4 | 0 | 0.125 |" in shown
    assert f"adapter `{tmp_path / 'a'}`" in shown


def test_from_stage_runs_it_and_later_ones_again(tmp_path):
    from aha.recipes.stages.runner import Run

    recipe = recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}})
    run = Run(recipe, tmp_path)
    for stage in ("eval-before", "sft", "eval-after-sft", "preflight", "grpo", "eval-after", "compare", "report"):
        (tmp_path / stage).mkdir()
        run.finish(stage, 1.0, {})
    (tmp_path / "report.md").write_text("old")
    reseeded = recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, "grpo": {"seed": 2}})
    with pytest.raises(RecipeError, match=r"grpo.seed changed after stages that read it ran"):
        Run(reseeded, tmp_path)
    again = Run(reseeded, tmp_path, restart_from="preflight")
    assert list(again.state["stages"]) == ["eval-before", "sft", "eval-after-sft"] and again.changed == ["grpo.seed"]
    assert (tmp_path / "sft").is_dir() and not (tmp_path / "grpo").exists() and not (tmp_path / "report.md").exists()


def test_pinned_trl_choices_are_the_installed_trls():
    """The values validation allows for TRL fields are pinned (never parsed from TRL's help text at run time);
    here they are checked against the installed TRL: each pinned value is one its field documents (quoted), each
    value its field documents as an option is pinned, every loss type is one its trainer's code branches on, and
    a value outside the pin is refused in one line."""
    import dataclasses
    import inspect
    import re

    import trl

    from aha.recipes.config.trl_args import TRL_CHOICES, trl_class

    for (stage, name), pinned in TRL_CHOICES.items():
        fields = {f.name: f for f in dataclasses.fields(trl_class(stage))}
        assert name in fields, f"TRL {trl.__version__} has no {stage} field {name}"
        text = fields[name].metadata.get("help", "")
        for value in pinned:
            assert f"'{value}'" in text or f"`{value}`" in text or f"`{value}'" in text, (name, value)
        # TRL documents each option as a quoted word that a description follows: "'dapo' (default): ...", "'batch': ..."
        documented = {{"True": True, "False": False}.get(w, w)
                      for w in re.findall(r"[`']+(\w+)[`']+(?=:| \(default\)| or )", text)}
        assert documented <= set(pinned), (name, documented - set(pinned))
    source = inspect.getsource(trl.GRPOTrainer)
    assert all(f'"{t}"' in source for t in TRL_CHOICES[("grpo", "loss_type")])
    for (stage, name), pinned in TRL_CHOICES.items():
        with pytest.raises(RecipeError, match=rf"{stage}.{name} must be one of .*not 'bogus'"):
            load_recipe(RECIPES / "tiny-qwen3-smoke.yaml", [f"{stage}.{name}=bogus"])
    gspo = load_recipe(RECIPES / "tiny-qwen3-smoke.yaml", ["grpo.importance_sampling_level=sequence"])
    assert gspo.grpo.args.importance_sampling_level == "sequence"


def test_vllm_versions_are_checked_when_the_recipe_is(monkeypatch):
    """use_vllm on a CPU with versions the weight-sync fix was not verified with is refused
    at validation, not when GRPO starts after evaluation and SFT."""
    pytest.importorskip("vllm")
    from aha.recipes.config import machine

    assert load_recipe(RECIPES / "tiny-qwen3-smoke.yaml", ["model.use_vllm=true"]).model.use_vllm
    monkeypatch.setitem(machine.CPU_SYNC_VERIFIED, "vllm", ("9.99",))
    with pytest.raises(RecipeError, match=r"model.use_vllm on a CPU is verified only with .*found vllm 0\.32"):
        load_recipe(RECIPES / "tiny-qwen3-smoke.yaml", ["model.use_vllm=true"])


def test_cli_choices_are_the_schemas_and_the_schemas_are_the_libraries():
    """A flag offers exactly what the recipe field allows, and the field exactly what the library does."""
    import argparse

    from aha.eval.compare import METRICS
    from aha.eval.metrics import VERDICTS
    from aha.recipes.cli import build_parser
    from aha.recipes.config.schema import EvalConfig, GRPOStage, ModelConfig, choices_of
    from aha.rewards.core import MODES

    def flag(command, name, sub=None):
        parser = build_parser()
        for path in [command] + ([sub] if sub else []):
            action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = action.choices[path]
        return tuple(next(a for a in parser._actions if name in a.option_strings).choices)

    assert flag("compare", "--metric") == choices_of(EvalConfig, "metric") == METRICS == VERDICTS
    assert flag("rewards", "--mode", "explain") == choices_of(GRPOStage, "reward_mode") == MODES
    assert flag("eval", "--dtype") == choices_of(ModelConfig, "dtype")
