"""Bad input, as a new user types it: every case ends in exit code 2 and one `aha: error:`
line that names the problem, with no traceback, and writes nothing outside --out.

The files are in tests/bad_inputs/; the rest are --set values and arguments."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aha.recipes.cli import main

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-qwen3-smoke.yaml"

# --set values that pass YAML and types but make no sense: each caught before anything loads.
BAD_SETS = [
    ("grpo.num_prompts=0", "grpo.num_prompts must be >= 1"),
    ("eval.tasks=[]", "eval.tasks is empty"),
    ("eval.tasks=[{task: arith, limit: 0}]", "eval.tasks[0].limit must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1"),
    ("data.num_train=-3", "data.num_train must be >= 1, not -3"),
    ("sft.num_examples=0", "sft.num_examples must be >= 1"),
    ("grpo.max_steps=-5", "grpo.max_steps must be at least 1 (or -1: train by epochs), not -5"),
    ("sft.max_steps=0", "sft.max_steps must be at least 1"),
    ("grpo.learning_rate=.nan", "grpo.learning_rate must be a finite number"),
    ("sft.learning_rate=-1e-4", "sft.learning_rate must be > 0"),
    ("lora.dropout=5.0", "lora.dropout must be >= 0 and < 1, not 5"),
    ("model.max_seq_length=-1", "model.max_seq_length must be >= 1"),
    ("grpo.num_generations=1", "grpo.num_generations must be >= 2"),
    ("grpo.temperature=0", "grpo.temperature must be > 0"),
    ("grpo.top_p=1.5", "grpo.top_p must be > 0 and <= 1"),
    ("lora.r=0", "lora.r must be >= 1, not 0"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens must be >= 1"),
    ("grpo.max_steps=[1", "--set grpo.max_steps: the value '[1' is not valid YAML"),
    ("name=/tmp/x", "name must be a plain name"),
    ("name=../../x", "name must be a plain name"),
    ("grpo.push_to_hub=true", "aha publishes through export.push_to_hub"),
    ("grpo.hub_token=hf_abc", "secrets never go in a recipe"),
    ("grpo.select=sometimes", "grpo.select must be one of all, learnable"),
    ("grpo.preflight_prompts=0", "grpo.preflight_prompts must be"),
    ("grpo.prompt_percentile=0", "grpo.prompt_percentile must be > 0 and <= 100, not 0"),
]

# Each case: argv (FILE = the corpus file, OUT = a fresh output folder), and what the message must say.
BAD_COMMANDS = [
    (["formats", "FILE:format_broken_yaml.yaml"], "not valid YAML"),
    (["formats", "FILE:format_eos_not_list.yaml"], "eos_tokens must be a list of strings"),
    (["formats", "FILE:format_prompt_not_string.yaml"], "system_prompt must be a string, not int"),
    (["formats", "FILE:format_overlapping_tags.yaml"], "does not read back its own example completion"),
    (["run", "FILE:recipe_not_utf8.yaml", "--dry-run"], "recipe_not_utf8.yaml: not UTF-8 text"),
    (["run", str(SMOKE), "--dry-run", "--set", "format=FILE:format_eos_not_list.yaml"], "eos_tokens must be a list"),
    (["eval", "--model", "builtin:tiny-qwen3", "--task", "gsm8k", "--data", "FILE:data_no_answer.jsonl", "--out", "OUT"],
     "data_no_answer.jsonl: row 1 has no 'answer'"),
    (["eval", "--model", "builtin:tiny-qwen3", "--task", "gsm8k", "--data", "FILE:data_just_a_number.jsonl", "--out",
      "OUT"], "row 1 is int '5', not a mapping"),
    (["eval", "--model", "builtin:tiny-qwen3", "--task", "gsm8k", "--data", "FILE:data_json_without_data.json", "--out",
      "OUT"], "a .json data file is a list of rows"),
    (["eval", "--model", "builtin:tiny-qwen3", "--task", "gsm8k", "--data", "FILE:data_question_null.jsonl", "--out",
      "OUT"], "row 1: question must be a non-empty str"),
    (["eval", "--model", "builtin:tiny-qwen3", "--task", "gsm8k", "--data", "FILE:data_empty.jsonl", "--out", "OUT"],
     "data_empty.jsonl: no problems in it"),
    (["eval", "--model", "builtin:tiny-qwen3", "--task", "gsm8k", "--data", "FILE:data_not_utf8.jsonl", "--out", "OUT"],
     "data_not_utf8.jsonl: not UTF-8 text"),
    (["eval", "--model", "/nonexistent/model", "--task", "arith", "--out", "OUT"], "--model: no such model folder: /nonexistent"),
    (["compare", "FILE:results_no_id.jsonl", "FILE:results_empty_samples.jsonl"], "results_no_id.jsonl:1: not a result row"),
    (["compare", "FILE:results_empty_samples.jsonl", "FILE:results_no_id.jsonl"],
     "results_empty_samples.jsonl:1: not a result row"),
    (["compare", "FILE:data_no_answer.jsonl", "FILE:data_question_null.jsonl"], "not a result row"),
    (["run", str(SMOKE), "--stop-after", "bogus", "--out", "OUT"], "--stop-after bogus: not a stage"),
]


def _argv(template, tmp_path):
    folder = f"{tmp_path / 'in'}{os.sep}"
    return [str(tmp_path / "out") if arg == "OUT" else arg.replace("FILE:", folder) for arg in template]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working folder holding a copy of the corpus; afterwards nothing else may be in it."""
    shutil.copytree(CORPUS, tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # builtin models for `aha eval` are cached here
    yield tmp_path
    left = {p.name for p in tmp_path.iterdir()} - {"in", "cache", "out"}
    assert not left, f"files written outside --out: {left}"
    assert not (tmp_path / "runs").exists()


def _one_error_line(capsys, message):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("aha: error:")]
    assert len(errors) == 1 and message in errors[0], err[-3:]
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("value, message", BAD_SETS, ids=[v for v, _ in BAD_SETS])
def test_bad_set_values(value, message, workdir, capsys):
    assert main(["run", str(SMOKE), "--dry-run", "--set", value]) == 2
    _one_error_line(capsys, message)


@pytest.mark.parametrize("argv, message", BAD_COMMANDS, ids=[str(i) for i in range(len(BAD_COMMANDS))])
def test_bad_files_and_arguments(argv, message, workdir, capsys):
    assert main(_argv(argv, workdir)) == 2
    _one_error_line(capsys, message)
    out = workdir / "out"
    assert not out.exists() or not any(out.rglob("*.jsonl")), "nothing is evaluated on bad input"


@pytest.mark.parametrize("value", ["grpo.bf16=true", "sft.bf16=true", "grpo.report_to=tensorboard",
                                   "grpo.top_k=-1", "eval.tasks=[{task: arith, limit: 5}]"])
def test_valid_trl_settings_are_accepted(value, workdir, capsys):
    assert main(["run", str(SMOKE), "--dry-run", "--set", value]) == 0


def test_numeric_gold_answers_are_read(tmp_path):
    from aha.eval.tasks import load_gsm8k

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "What is 2+2?", "answer": 4}) + "\n")
    assert load_gsm8k(path)[0].answer == "4"


def test_rewards_explain_keeps_non_ascii_text(capsys):
    assert main(["rewards", "explain", "x\\n<end_working_out><SOLUTION>é</SOLUTION>", "--answer", "é"]) == 0
    out = capsys.readouterr().out
    assert "read 'é'" in out and "Ã" not in out


def test_console_script_bad_input_is_one_line(tmp_path):
    """The installed `aha` command itself, not only main()."""
    aha = Path(sys.executable).with_name("aha")
    if not aha.is_file():
        pytest.skip("the aha console script is not installed next to this interpreter")
    done = subprocess.run([str(aha), "run", str(SMOKE), "--dry-run", "--set", "grpo.num_prompts=0"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "aha: error: grpo.num_prompts must be >= 1, not 0"]
