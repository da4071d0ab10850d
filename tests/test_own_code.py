"""Reliability round 5 (issue 46): your own tasks, reward functions, graders and reward models held to the
shipped parts' promise. Each bad input is one ``aha: error:`` line naming your file, row, field or function,
exit 2, no traceback, no hang, nothing of yours touched, and refused before anything loads wherever it can be
checked early; your code runs bounded in time, cannot end the run, and cannot change what the next reward sees."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from aha.recipes.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own-task"
SLEEPS = "import time\ntime.sleep(600)\n"


def _example(tmp_path: Path, rewards: list | None = None, task: dict | None = None, **top) -> Path:
    """The own-task example copied (so its files can change), with other rewards, task keys or top-level values."""
    folder = tmp_path / "own"
    if not folder.exists():
        shutil.copytree(EXAMPLE, folder)
    data = yaml.safe_load((EXAMPLE / "recipe.yaml").read_text())
    if rewards is not None:
        data["grpo"]["rewards"] = rewards
    data["tasks"]["units"].update(task or {})
    data.update(top)
    path = folder / f"recipe-{len(list(folder.glob('recipe-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _file(folder: Path, name: str, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return str(folder / name)


def _rows(folder: Path, name: str, rows: list[dict]) -> str:
    return _file(folder, name, "".join(json.dumps(r) + "\n" for r in rows))


def _cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    own = tmp_path / "own"
    shutil.copytree(EXAMPLE, own)
    fast = {"user_code_timeout": 2.0}
    reward = lambda body: [{"name": "format_exact"}, {"name": f"{_file(own, f'r{abs(hash(body))}.py', body)}:fn"}]  # noqa: E731
    grader = lambda body: {"grader": f"{_file(own, f'g{abs(hash(body))}.py', body)}:fn"}  # noqa: E731

    def run(recipe: Path) -> list[str]:
        return ["run", str(recipe), "--out", "out"]

    # your task's data, each a file aha eval reads as a task
    rows = own / "rows"
    task_file = lambda name, spec: _file(rows, name, yaml.safe_dump(spec))  # noqa: E731
    evaluate = lambda task, *more: ["eval", "--model", "builtin:tiny-qwen3", "--task", task, "--out", "out",  # noqa: E731
                                    "--max-new-tokens", "4", *more]
    listed_id = task_file("listed.yaml", {"file": _rows(rows, "listed.jsonl", [{"q": "1+1?", "a": "2", "k": [1, 2]}]),
                                          "question": "q", "answer": "a", "id": "k"})
    surrogate = _file(rows, "surrogate.jsonl", '{"q": "What is \\ud800 1+1?", "a": "2"}\n')
    bomb = "\n".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9))
    half = task_file("half.yaml", {"file": _rows(rows, "half.jsonl", [{"q": "Half of 1?", "a": "½"}]),
                                   "question": "q", "answer": "a"})
    hub = task_file("hub.yaml", {"hub": "no-such-user/no-such-data-set", "question": "q", "answer": "a"})
    sleepy_grader = task_file("sleepy.yaml", {"file": str(own / "test.jsonl"), "question": "q", "answer": "final",
                                              "grader": f"{_file(rows, 'slow.py', 'import time' + chr(10) + 'def fn(a, g):' + chr(10) + '    time.sleep(600)' + chr(10))}:fn"})
    before, after, other = (own / "cmp" / n for n in ("before", "after", "other"))
    for folder, grader_name in ((before, None), (after, None), (other, "math")):
        folder.mkdir(parents=True)
        (folder / "samples.jsonl").write_text(json.dumps({"id": "p1", "question": "q", "answer": "1", "samples": [
            {"text": "1", "strict": True, "lenient": True, "format_ok": True, "math_verify": True}]}) + "\n")
        (folder / "fingerprint.json").write_text(json.dumps({"backend": "hf", "format": "unsloth", "sampling": {},
                                                            **({"grader": grader_name} if grader_name else {})}))
    return [
        # your reward functions: bounded in time, never ending the run, options checked by name
        (run(_example(tmp_path, reward("import time\ndef fn(completions, **kw):\n    time.sleep(600)\n"), **fast)),
         "reward fn: one call ran over 2 s and was stopped"),
        (run(_example(tmp_path, reward("import sys\ndef fn(completions, **kw):\n    sys.exit(0)\n"))),
         "reward fn: called exit(0) inside a call: your code may not end the run"),
        (run(_example(tmp_path, reward("import os\ndef fn(completions, **kw):\n    os._exit(0)\n"))),
         "reward fn: called exit(0) inside a call"),
        (run(_example(tmp_path, reward("import sys\ndef fn(completions, **kw):\n    sys.exit(3)\n"))),
         "called exit(3) inside a call"),
        (run(_example(tmp_path, reward("raise SystemExit(0)\ndef fn(completions, **kw):\n    return []\n"))),
         ": importing "),
        (run(_example(tmp_path, reward(SLEEPS + "def fn(completions, **kw):\n    return []\n"), **fast)),
         "one call ran over 2 s"),
        (run(_example(tmp_path, [{"name": "rewards.py:close_to_gold", "tolerence": 0.1}])),
         "reward close_to_gold: no parameter named 'tolerence' (its options: answer, tolerance"),
        (run(_example(tmp_path, [{"name": "rewards.py:says_the_unit", "weight": 1.0, "scale": 2}])),
         "reward says_the_unit: no parameter named 'scale'"),
        (run(_example(tmp_path, reward("def fn(completions, **kw):\n    return [float('inf')] * len(completions)\n"))),
         "returned inf, not a finite number or None"),
        (run(_example(tmp_path, reward("def fn(completions, **kw):\n    return None\n"))),
         "returned NoneType, not a list with one score per completion"),
        (run(_example(tmp_path, [{"name": "reward_model", "model": "x", "normalize": "false"}])),
         "reward_model normalize must be true or false, not 'false'"),
        (run(_example(tmp_path, [{"name": "reward_model", "model": "x", "label": "1"}])),
         "reward_model label must be a label's index"),
        # your graders: called on their own gold before anything loads, bounded, never ending the run
        (run(_example(tmp_path, task=grader("import time\ndef fn(answer, gold):\n    time.sleep(600)\n"), **fast)),
         "grader "),
        (run(_example(tmp_path, task=grader("import sys\ndef fn(answer, gold):\n    sys.exit(0)\n"))),
         "called exit(0) inside a call"),
        (run(_example(tmp_path, task=grader("def fn(answer, gold):\n    return None\n"))),
         "returned None for answer '240'; a grader returns True or False"),
        (run(_example(tmp_path, task=grader("def fn(answer):\n    return True\n"))),
         "raised TypeError: fn() takes 1 positional argument but 2 were given"),
        (evaluate(sleepy_grader, "--user-code-timeout", "2"), "one call ran over 2 s and was stopped"),
        # your task's data
        (evaluate(listed_id), "listed.jsonl: row 1: its id (k) is list '[1, 2]'; an id is a text or a whole number"),
        (evaluate(task_file("surrogate.yaml", {"file": surrogate, "question": "q", "answer": "a"})),
         "surrogate.jsonl: row 1: its q holds '\\ud800' at character 9, which is not text"),
        (evaluate(_file(rows, "bomb.yaml", "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + bomb + "\n")),
         "bomb.yaml: the YAML expands to more than 200,000 values through its aliases"),
        (evaluate(half), "half.jsonl: row 1: its gold '½' writes a number with '½'"),
        (evaluate(hub), "hub data set no-such-user/no-such-data-set, split test: could not be read"),
        (run(_example(tmp_path, task={"train_file": "test.jsonl", "file": "test.jsonl"})),
         "tasks.units: train_file is its file (test.jsonl): training would read the evaluation rows"),
        # three older promises
        (["eval", "--model", "builtin:tiny-qwen3", "--task", "aime24", "--limit", "2", "--out", "out",
          "--max-new-tokens", "1000000000"], "--max-new-tokens 1000000000: with the longest prompt"),
        (["run", "tiny-qwen3-smoke", "--out", "out", "--set", "lora.target_modules=[q_proj, qkv]"],
         "lora.target_modules: builtin:tiny-qwen3 has no linear layer named 'qkv'"),
        (["compare", str(before), str(after), str(before), str(after), "--out", "pooled"], "is the after of 2 pairs"),
        (["compare", str(before), str(other)], "were graded differently (numeric vs math)"),
    ]


def test_each_bad_input_of_your_own_is_one_line_exit_2_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cases = _cases(tmp_path)
    mine = {p: p.read_bytes() for p in (tmp_path / "own").rglob("*") if p.is_file()}
    failures = []
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        left = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
        # the run's own log lines may come first (where an earlier test set up logging): the error is the last line
        ours = [line for line in err.splitlines() if line.startswith("aha")]
        if code != 2 or len(ours) != 1 or message not in ours[0] or not err.endswith(ours[0]) or "Traceback" in err \
                or left:
            failures.append(f"{' '.join(argv)[-100:]} -> {code}: {err[-400:]!r} (left: {left})")
        for path in left:
            shutil.rmtree(work / path, ignore_errors=True)
    assert not failures, "\n".join(failures)
    assert {p: p.read_bytes() for p in mine} == mine  # nothing of yours changed


def test_a_function_that_takes_any_option_says_so(tmp_path):
    from aha.rewards import UserReward

    path = _file(tmp_path, "any.py", "def fn(completions, **kw):\n    return [float(kw['scale'])] * len(completions)\n"
                 "fn.accepts_any_option = True\n")
    assert UserReward(f"{path}:fn", {"scale": 2})(["a"]) == [2.0]


def test_your_reward_cannot_change_what_the_next_reward_sees(tmp_path):
    from aha.rewards import UserReward

    path = _file(tmp_path, "greedy.py", "def fn(completions, answer, **kw):\n    answer.append('x')\n"
                 "    completions[0] = 'changed'\n    return [0.0] * len(completions)\n"
                 "def after(completions, answer, **kw):\n    return [float(len(answer) + len(completions[0]))]\n")
    completions, answer = ["abc"], ["1"]
    UserReward(f"{path}:fn")(completions, answer=answer)
    assert completions == ["abc"] and answer == ["1"]
    assert UserReward(f"{path}:after")(completions, answer=answer) == [4.0]


def test_the_recorded_hash_covers_the_modules_your_reward_imports(tmp_path, capsys):
    """A helper module beside the reward file and a package it imports are part of the hash and of --dry-run's
    list, packages' __init__.py included: a resumed run refuses a changed helper."""
    from aha.recipes import load_recipe
    from aha.recipes.config.schema import RecipeError

    own = tmp_path / "own"
    shutil.copytree(EXAMPLE, own)
    _file(own, "helper.py", "SCALE = 1.0\n")
    _file(own / "pkg", "__init__.py", "from .part import OFFSET\n")
    _file(own / "pkg", "part.py", "OFFSET = 0.0\n")
    _file(own, "scored.py", "from helper import SCALE\nimport pkg\n\ndef fn(completions, **kw):\n"
          "    return [SCALE + pkg.OFFSET] * len(completions)\n")
    recipe = _example(tmp_path, [{"name": "format_exact"}, {"name": "scored.py:fn"}])
    assert main(["run", str(recipe), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    for name in ("helper.py (imported by scored.py)", "pkg/__init__.py (imported by scored.py)",
                 "pkg/part.py (imported by scored.py)"):
        assert name in listed, listed
    recorded = load_recipe(recipe).grpo.rewards[1].sha256
    (own / "pkg" / "part.py").write_text("OFFSET = 5.0\n")
    with pytest.raises(RecipeError, match="has changed since this recipe recorded it"):
        load_recipe(recipe, {"grpo.rewards": [{"name": "format_exact"}, {"name": "scored.py:fn", "sha256": recorded}]})


def test_a_changed_grader_is_another_evaluation(tmp_path, tiny_qwen3, capsys):
    """The grader's source is in the evaluation's fingerprint: resuming with a changed grader is refused."""
    grader = _file(tmp_path, "g.py", "def fn(answer, gold):\n    return answer == gold\n")
    spec = _file(tmp_path, "t.yaml", yaml.safe_dump({"file": str(EXAMPLE / "test.jsonl"), "question": "q",
                                                     "answer": "final", "id": "uid", "grader": f"{grader}:fn"}))
    argv = ["eval", "--model", str(tiny_qwen3), "--task", spec, "--limit", "2", "--max-new-tokens", "2", "--out",
            str(tmp_path / "out")]
    assert main(argv) == 0
    Path(grader).write_text("def fn(answer, gold):\n    return answer.strip() == gold.strip()\n")
    assert main(argv) == 2
    assert "grader_sha256 differ" in capsys.readouterr().err


def test_a_csv_with_a_byte_order_mark_keeps_its_first_column(tmp_path):
    """Excel's "CSV UTF-8" begins with a byte-order mark: the first column is still found by its name."""
    from aha.eval import load_task
    from aha.eval.tasks import task_from_spec

    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffuid,q,a\nx1,What is 1+1?,2\nx2,What is 2+2?,4\n".encode("utf-8"))
    task = task_from_spec("mine", {"file": str(path), "question": "q", "answer": "a", "id": "uid"})
    assert [p.id for p in load_task(task)] == ["mine-x1", "mine-x2"]


def test_a_task_file_reads_as_yaml_1_2_as_recipes_do(tmp_path):
    from aha.eval.tasks import read_task_spec

    assert read_task_spec(_file(tmp_path, "t.yaml", "file: x.jsonl\nsource: off\n"))["source"] == "off"


def test_a_reward_model_must_be_a_trained_classifier(tmp_path, tiny_qwen3):
    """A causal LM loads as a sequence classifier with a random score head: refused, naming what is missing."""
    from aha.formats import InputError
    from aha.rewards import RewardModel

    with pytest.raises(InputError, match=r"score.weight not in the checkpoint .*Qwen3ForCausalLM.*not a language "):
        RewardModel(str(tiny_qwen3))(["an answer"])


@pytest.mark.parametrize("logs, stops", [({"loss": 0.1, "reward": float("-inf"), "reward_std": float("nan")}, True),
                                         ({"loss": 0.1, "rewards/mine/mean": float("inf")}, True),
                                         ({"loss": 0.1, "reward": 1.0, "rewards/mine/mean": float("nan")}, False)])
def test_a_reward_that_is_not_a_finite_number_stops_grpo_like_a_nan_loss(logs, stops):
    """A weight of 1e308 makes the total reward -inf and its std NaN: GRPO stops at that step, saving nothing
    more; a layer whose mean is NaN only because it scored every completion None is not an error."""
    from transformers import TrainerControl

    from aha.recipes import load_recipe
    from aha.recipes.training.trainers import RewardWatch

    watch, control = RewardWatch(load_recipe("tiny-qwen3-smoke"), [], 16), TrainerControl()
    watch._watch_numbers(3, logs, control)
    assert control.should_training_stop is stops and (watch.diverged is not None) is stops
    if stops:
        assert watch.diverged.startswith("grpo stopped at step 3: ") and control.should_save is False
