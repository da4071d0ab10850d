"""Your own data and rewards (issue 33): tasks as data from your files, reward functions by
reference or passed in Python, a reward model as a layer, and examples/own-task end to end."""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from aha.eval import grade, load_task
from aha.eval.tasks import task_from_spec
from aha.formats import InputError
from aha.recipes.cli import main
from aha.recipes import load_recipe
from aha.recipes.config.schema import RecipeError
from aha.rewards import RewardModel, UserReward, get_reward

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own-task"


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def own_recipe(tmp_path: Path, **changes) -> Path:
    """The example copied into tmp_path (so its files can be changed), with ``changes`` (dotted keys) applied."""
    folder = tmp_path / "own-task"
    shutil.copytree(EXAMPLE, folder)
    data = yaml.safe_load((folder / "recipe.yaml").read_text())
    for key, value in changes.items():
        node = data
        *parts, last = key.split(".")
        for part in parts:
            node = node[part]
        node[last] = value
    (folder / "recipe.yaml").write_text(yaml.safe_dump(data))
    return folder / "recipe.yaml"


# ----- tasks as data ---------------------------------------------------------------------------------------------
def test_a_task_of_your_own_reads_your_field_names_and_keeps_your_other_columns(tmp_path):
    data = write_rows(tmp_path / "mine.jsonl", [{"q": "What is 2 + 2?", "final": 4, "worked": "2 + 2 = 4", "uid": "a",
                                                  "unit": "apples"}])
    task = task_from_spec("mine", {"file": str(data), "question": "q", "answer": "final", "solution": "worked",
                                   "id": "uid"})
    (p,) = load_task(task)
    assert (p.id, p.question, p.answer, p.columns) == ("mine-a", "What is 2 + 2?", "4", {"unit": "apples"})
    assert not task.trains  # no training rows were named


@pytest.mark.parametrize("rows, message", [
    ([{"q": "a", "final": "1", "uid": 1}, {"q": "b", "final": "2", "uid": 1}], "row 2: id 1 again (first in row 1)"),
    ([{"q": "a", "final": float("nan")}], "row 1: final must be a non-empty str or int or float, not 'nan'"),
    ([{"q": "a", "final": "  "}], "row 1: final must be a non-empty"),
    ([{"q": "a"}], "row 1 has no 'final'"),
])
def test_bad_rows_of_your_own_task_are_one_line_naming_the_row(tmp_path, rows, message):
    data = write_rows(tmp_path / "mine.jsonl", rows)
    task = task_from_spec("mine", {"file": str(data), "question": "q", "answer": "final", "id": "uid"})
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_task(task)


@pytest.mark.parametrize("spec, message", [
    ({"file": "missing.jsonl"}, "file: no such data file: missing.jsonl"),
    ({"file": "d.jsonl", "hub": "org/data"}, "one of the two"),
    ({"file": "d.jsonl", "colour": "red"}, "unknown key(s) colour"),
    ({"file": "d.jsonl", "grader": "fuzzy"}, "grader must be one of numeric, math, exact"),
    ({"file": "d.jsonl", "grader": "nope.py:fn"}, "nope.py:fn: no such file"),
    ({"file": "d.jsonl", "heldout": 0}, "heldout must be a positive integer"),
    ({"file": "d.jsonl", "train_file": "d.jsonl", "heldout": 2}, "already apart"),
    ({"file": "d.jsonl", "question": 3}, "question must be text"),
])
def test_a_bad_task_spec_is_one_line(tmp_path, spec, message):
    write_rows(tmp_path / "d.jsonl", [{"question": "a", "answer": "1"}])
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        task_from_spec("mine", spec, tmp_path)


def test_csv_that_holds_json_and_a_ragged_csv_are_refused(tmp_path):
    (tmp_path / "a.csv").write_text('{"question": "a", "answer": 1}\n')
    (tmp_path / "b.csv").write_text("question,answer\nwhat,1,extra\n")
    for name, message in (("a.csv", "holds JSON, not CSV"), ("b.csv", "b.csv:2: more values than the header")):
        with pytest.raises(InputError, match=message):
            load_task(task_from_spec("mine", {"file": name}, tmp_path))


def test_one_file_split_by_heldout_never_trains_on_a_held_out_problem(tmp_path):
    rows = [{"question": f"A box has {i} red and {i + 3} blue balls. How many balls are in the box?", "answer": 2 * i + 3}
            for i in range(40)]
    data = write_rows(tmp_path / "all.jsonl", rows)
    task = task_from_spec("mine", {"file": str(data), "heldout": 10})
    held, train = load_task(task), load_task(task, split="train")
    assert len(held) == 10 and len(train) == 30 and task.trains
    assert not {p.question for p in held} & {p.question for p in train}
    with pytest.raises(InputError, match="heldout 40 leaves no training problems"):
        load_task(task_from_spec("mine", {"file": str(data), "heldout": 40}))


def test_exact_and_your_own_grader(tmp_path):
    (tmp_path / "g.py").write_text("def lenient_case(answer, gold):\n    return answer.lower() == gold.lower()\n"
                                   "def says_maybe(answer, gold):\n    return 'maybe'\n")
    done = "so<end_working_out><SOLUTION>Paris</SOLUTION>"
    assert grade(done, "Paris", grader="exact")["strict"] and not grade(done, "paris", grader="exact")["strict"]
    assert grade(done, "paris", grader=f"{tmp_path}/g.py:lenient_case")["strict"]
    with pytest.raises(InputError, match="says_maybe: returned 'maybe'.*returns True or False"):
        grade(done, "paris", grader=f"{tmp_path}/g.py:says_maybe")


def test_aha_eval_takes_a_task_file(tmp_path, tiny_qwen3, capsys):
    write_rows(tmp_path / "rows.jsonl", [{"q": f"What is {i} + {i}?", "a": str(2 * i)} for i in range(3)])
    (tmp_path / "sums.yaml").write_text("file: rows.jsonl\nquestion: q\nanswer: a\ngrader: exact\n")
    assert main(["eval", "--model", str(tiny_qwen3), "--task", str(tmp_path / "sums.yaml"), "--max-new-tokens", "4",
                 "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["results"]["problems"] == 3 and summary["config"]["grader"] == "exact"
    (tmp_path / "bad.yaml").write_text("file: rows.jsonl\nquestion: q\n")  # answer defaults to "answer": not there
    assert main(["eval", "--model", str(tiny_qwen3), "--task", str(tmp_path / "bad.yaml"), "--out",
                 str(tmp_path / "out2")]) == 2
    assert "row 1 has no 'answer' (columns: q, a)" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


# ----- recipes naming your tasks -----------------------------------------------------------------------------
def test_the_example_recipe_records_absolute_paths_and_your_files_without_importing_them(tmp_path, capsys):
    recipe_path = own_recipe(tmp_path)
    marker = tmp_path / "imported"
    rewards = recipe_path.parent / "rewards.py"
    rewards.write_text(rewards.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    recipe = load_recipe(recipe_path)
    spec = recipe.tasks["units"]
    assert Path(spec["file"]).is_absolute() and Path(spec["train_file"]).is_absolute()
    assert all(len(r.sha256 or "") == 64 for r in recipe.grpo.rewards[2:])
    assert main(["run", str(recipe_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{rewards} (grpo.rewards[2]: says_the_unit)" in out and "tasks.units.grader: within_one_percent" in out
    assert "target: 1 meter is 100 centimeters" in out and "columns for your rewards: unit='centimeters'" in out
    assert not marker.exists()  # validation and --dry-run read your file; they never run it


@pytest.mark.parametrize("changes, message", [
    ({"data.task": "nope"}, "data.task must be one of gsm8k, dapo-math, arith, units, not 'nope'"),
    ({"tasks.units.train_file": None}, "data.task must be one of gsm8k, dapo-math, arith, not 'units'"),
    ({"tasks.units.solution": None}, "sft: units has no worked solutions"),
    ({"grpo.rewards": [{"name": "rewards.py:no_such_fn"}]}, "defines no 'no_such_fn' at its top level"),
    ({"grpo.rewards": [{"name": "missing.py:fn"}]}, "grpo.rewards[0]: missing.py:fn: no such file: missing.py"),
    ({"grpo.rewards": ["rewards.py:says_the_unit", {"name": "rewards.py:says_the_unit", "weight": 2}]},
     "'says_the_unit' is also grpo.rewards[0]'s name"),
    ({"grpo.rewards": [{"name": "rewards.py:says_the_unit", "sha256": "0" * 64}]}, "has changed since this recipe"),
    ({"tasks.units.heldout": 3}, "already apart"),
])
def test_recipe_mistakes_about_your_task_and_rewards_are_one_line(tmp_path, changes, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load_recipe(own_recipe(tmp_path, **changes))


@pytest.mark.parametrize("body, message", [
    ("def bad(completions, **kw):\n    return [1.0]\n", "returned 1 values for 8 completions"),
    ("def bad(completions, **kw):\n    return ['high'] * len(completions)\n", "returned 'high', not a finite number"),
    ("def bad(completions, **kw):\n    raise KeyError('unit')\n", "raised KeyError: 'unit' when called on 8 sample"),
    ("def bad(completions, answer):\n    return [0.0] * len(completions)\n", "bad\\(\\) got an unexpected keyword argument 'prompts' .*give the function \\*\\*kwargs"),
])
def test_a_reward_of_yours_that_fails_its_test_call_stops_the_run_before_anything_is_written(tmp_path, body, message):
    recipe_path = own_recipe(tmp_path)
    (recipe_path.parent / "bad.py").write_text(body)
    out = tmp_path / "run"
    with pytest.raises(InputError, match=r"grpo.rewards\[4\] \(.*bad.py:bad\): " + message):
        from aha.recipes import api

        api.run(load_recipe(recipe_path, {"grpo.rewards": [{"name": r.name} for r in load_recipe(
            recipe_path).grpo.rewards] + [{"name": "bad.py:bad"}]}), out=out)
    assert not out.exists()


def score_length(completions, **kwargs):
    return [float(len(c)) for c in completions]


def test_python_api_takes_your_reward_function_itself(tmp_path):
    from aha.formats import get_format
    from aha.recipes.training.trainers import reward_functions, test_rewards

    recipe = load_recipe(own_recipe(tmp_path), {"grpo.rewards": [score_length, {"name": "format_exact"}]})
    spec = recipe.grpo.rewards[0]
    assert spec.function is score_length and spec.name.endswith("score_length") and len(spec.sha256) == 64
    assert "function" not in recipe.to_dict()["grpo"]["rewards"][0]  # recorded by name and hash
    fmt = get_format("unsloth")
    test_rewards(recipe, fmt)
    funcs, weights = reward_functions(recipe, fmt, None)
    assert funcs[0].__name__ == "score_length" and funcs[0](["abc"]) == [3.0] and weights == [1.0, 1.0]


# ----- your reward functions as layers ------------------------------------------------------------------------
def test_a_batch_your_function_raises_on_is_scored_one_by_one_and_counted(tmp_path):
    (tmp_path / "r.py").write_text("def picky(completions, **kw):\n"
                                   "    return [1.0 / len(c) for c in completions]\n")
    reward = get_reward(f"{tmp_path}/r.py:picky")
    assert isinstance(reward, UserReward) and reward(["ab", "", "abcd"]) == [0.5, None, 0.25] and reward.errors == 1
    copy = pickle.loads(pickle.dumps(reward))  # TRL's workers: imported again by reference
    assert copy(["a"]) == [1.0] and copy.errors == 1


def test_rewards_explain_scores_with_your_function(tmp_path, capsys):
    (tmp_path / "r.py").write_text("def tagged(completions, answer, **kw):\n"
                                   "    return [2.0 if a in c else 0.0 for c, a in zip(completions, answer)]\n")
    assert main(["rewards", "explain", "x<end_working_out><SOLUTION>7</SOLUTION>", "--answer", "7", "--reward",
                 f"{tmp_path}/r.py:tagged"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tagged"))
    assert "2.000" in row and "your function" in row


# ----- a reward model as a layer -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A 2-layer Qwen3 sequence classifier (one score) with random weights and the real Qwen3 tokenizer: built
    locally from a config, no download."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForSequenceClassification

    from aha.recipes.training.models import qwen3_tokenizer_folder

    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_folder()))
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, num_labels=1)
    folder = tmp_path_factory.mktemp("reward-model")
    Qwen3ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_reward_model_scores_in_batches_as_one_at_a_time(tiny_classifier):
    reward = get_reward("reward_model", model=str(tiny_classifier), batch_size=3)
    assert isinstance(reward, RewardModel)
    completions = ["short", "a much longer completion that needs padding in its batch", "x", "4", None]
    questions = ["What is 2 + 2?"] * 5
    batched = reward(completions, prompts=[""] * 5, question=questions)
    alone = [reward([c], prompts=[""], question=[q])[0] for c, q in zip(completions, questions)]
    assert batched[4] is None and alone[4] is None
    assert all(abs(a - b) < 1e-4 for a, b in zip(batched[:4], alone[:4]))
    assert len(set(round(x, 4) for x in batched[:4])) > 1  # it reads the text
    normalised = get_reward("reward_model", model=str(tiny_classifier), normalize=True)(completions[:2], question=questions[:2])
    assert all(0 < x < 1 for x in normalised)
    assert pickle.loads(pickle.dumps(reward))._loaded is None  # pickles without its weights; loads again on use


def test_reward_model_mistakes_are_one_line(tmp_path, tiny_classifier):
    with pytest.raises(InputError, match="reward_model needs its model"):
        get_reward("reward_model")
    with pytest.raises(InputError, match="reward reward_model: .*unexpected keyword.*options: model, normalize"):
        get_reward("reward_model", model="x", colour=1)
    with pytest.raises(InputError, match="cannot load a sequence-classification model"):
        get_reward("reward_model", model=str(tmp_path))(["a"])


# ----- end to end ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_example_own_task_end_to_end_from_keeps_the_users_files_and_a_changed_reward_is_refused(tmp_path, capsys):
    recipe_path = own_recipe(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(recipe_path), "--out", str(out)]) == 0
    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"])[-1] == "report"
    history = json.loads((out / "grpo" / "log_history.json").read_text())
    assert any("rewards/says_the_unit/mean" in row for row in history)  # your function, logged under its name
    preflight = json.loads((out / "preflight" / "preflight.json").read_text())
    assert {"says_the_unit", "close_to_gold"} <= set(json.dumps(preflight).split('"'))  # per-layer statistics
    log = (out / "run.log").read_text()
    assert "dropped 2 training problems that are also evaluation problems" in log  # same id, and reworded
    rows = [json.loads(line) for line in (out / "eval-after" / "units" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["id"].startswith("units-u")
    assert (out / "reward_curves.png").is_file() and "says_the_unit" in (out / "report.md").read_text()
    # The run folder records what each stage wrote; files a user drops into it survive --from.
    assert "export/adapter/adapter_config.json" in state["wrote"]["export"] and "report.md" in state["wrote"]["report"]
    mine = {"mine.txt": "top", "export/keep.txt": "beside the adapter", "eval-after/notes.md": "my notes",
            "export/adapter/extra.txt": "inside aha's folder"}
    for rel, text in mine.items():
        (out / rel).write_text(text)
    samples = out / "eval-after" / "units" / "samples.jsonl"
    answers = samples.read_text()
    assert main(["run", str(recipe_path), "--out", str(out), "--from", "eval-after"]) == 0
    assert {rel: (out / rel).read_text() for rel in mine} == mine  # every file of the user's, as it was
    assert samples.read_text() == answers and (out / "export" / "adapter" / "adapter_model.safetensors").is_file()
    # The reward file changes after GRPO ran on it: re-running the same command refuses to mix the two.
    rewards = recipe_path.parent / "rewards.py"
    rewards.write_text(rewards.read_text().replace("0.5 if u and u in c", "0.7 if u and u in c"))
    capsys.readouterr()
    assert main(["run", str(recipe_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grpo.rewards changed after stages that read it ran" in err[0]


@pytest.mark.slow
def test_example_with_a_reward_model_layer_trains(tmp_path, tiny_classifier):
    recipe_path = own_recipe(tmp_path)
    out = tmp_path / "run"
    overrides = ["eval.enabled=false", "grpo.max_steps=1", "grpo.preflight=off",
                 f"grpo.rewards=[{{name: format_exact}}, {{name: reward_model, model: '{tiny_classifier}', "
                 "normalize: true, weight: 2.0}]"]
    assert main(["run", str(recipe_path), "--out", str(out), "--stop-after", "grpo"]
                + [x for o in overrides for x in ("--set", o)]) == 0
    history = json.loads((out / "grpo" / "log_history.json").read_text())
    means = [row["rewards/reward_model/mean"] for row in history if "rewards/reward_model/mean" in row]
    assert means and all(0 < m < 1 for m in means)  # scored every completion, normalised
    recorded = yaml.safe_load((out / "recipe.yaml").read_text())["grpo"]["rewards"][1]
    assert recorded["options"] == {"model": str(tiny_classifier), "normalize": True} and recorded["weight"] == 2.0
    assert os.listdir(out / "grpo" / "adapter")


def test_a_hub_dataset_task_loads_through_the_datasets_library(tmp_path):
    """The hub path itself (datasets.load_dataset with id, config and split), on a local dataset folder:
    the same call reads a hub id for users."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    write_rows(folder / "train.jsonl", [{"q": f"What is {i} + 1?", "final": str(i + 1)} for i in range(6)])
    write_rows(folder / "test.jsonl", [{"q": f"What is {i} + 2?", "final": str(i + 2)} for i in range(3)])
    task = task_from_spec("mine", {"hub": str(folder), "split": "test", "train_split": "train", "question": "q",
                                   "answer": "final"})
    assert task.trains and [p.answer for p in load_task(task)] == ["2", "3", "4"]
    assert len(load_task(task, split="train")) == 6
