"""Reliability round 4 (issue 34): inputs a tired user types, each answered before anything loads in
one line with exit code 2, leaving nothing behind and changing nothing of the user's."""

import json
import shutil
from pathlib import Path

import pytest

from aha.recipes.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "tiny-qwen3-smoke.yaml")
AIME = ROOT / "eval" / "data" / "aime24" / "test.jsonl"


def _model_without(tiny_qwen3: Path, tmp_path: Path, *suffixes: str) -> Path:
    folder = tmp_path / f"model-without{'-'.join(suffixes)}"
    shutil.copytree(tiny_qwen3, folder)
    for file in folder.iterdir():
        if file.name.endswith(suffixes):
            file.unlink()
    return folder


def _cases(tiny_qwen3: Path, tmp_path: Path) -> list[tuple[list[str], str]]:
    model = str(tiny_qwen3)
    (tmp_path / "alias.yaml").write_text("name: loop\nmodel: {name: builtin:tiny-qwen3}\nlora:\n  target_modules: &x [q_proj, *x]\n")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "q", "answer": "2 + 2 = 4\n#### "}) + "\n")
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"problem": "q", "answer": NaN, "id": 1}\n')
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    unverdicted = tmp_path / "unverdicted" / "a"
    for folder in (unverdicted, unverdicted.parent / "b"):
        folder.mkdir(parents=True)
        (folder / "samples.jsonl").write_text('{"id": "p1", "answer": "3", "samples": [{"text": "3"}]}\n')
    no_tokenizer = _model_without(tiny_qwen3, tmp_path, "tokenizer.json", "tokenizer_config.json", "vocab.json",
                                  "merges.txt")
    no_weights = _model_without(tiny_qwen3, tmp_path, ".safetensors")
    run = ["run", SMOKE, "--out", "out"]
    evaluate = ["eval", "--model", model, "--out", "out", "--max-new-tokens", "4"]
    return [
        (run + ["--set", "seed=4294967296"], "seed must be >= 0 and <= 4294967295, not 4294967296"),
        (run + ["--set", "sft.adam_beta1=.nan"], "sft.adam_beta1 must be a finite number, not nan"),
        (run + ["--set", "lora.target_modules=[]"], "lora.target_modules must name at least one linear layer"),
        (run + ["--set", f"model.name={model}", "--set", "lora.target_modules=[q_proj, no_such_proj]"],
         "has no linear layer named 'no_such_proj'; its linear layers: down_proj, gate_proj, k_proj"),
        (run + ["--set", "grpo.rewards=[{name: format_exact, weight: .nan}]"],
         "grpo.rewards[0].weight must be a finite number, not nan"),
        (run + ["--set", "model.max_seq_length=16"], "grpo.max_completion_length 16 leaves no room for a prompt"),
        (run + ["--set", "eval.max_new_tokens=1000000000"],
         "eval.max_new_tokens 1000000000 leaves no room for a prompt in builtin:tiny-qwen3's context of 2048 tokens"),
        (run + ["--set", f"model.name={model}", "--set", "model.max_seq_length=4096"],
         "model.max_seq_length 4096 is past"),
        (run + ["--dry-run", "--stop-after", "evall-after"], "--stop-after evall-after: not a stage of this recipe"),
        (run + ["--set", f"model.name={no_tokenizer}"], "has no tokenizer files"),
        (run + ["--set", f"model.name={no_weights}"], "has no weights (*.safetensors or *.bin)"),
        (["run", str(tmp_path / "alias.yaml"), "--out", "out"], "a YAML alias refers to its own anchor"),
        (evaluate + ["--task", "aime24", "--limit", "31"], "--limit 31: aime24 has 30 problems"),
        (evaluate + ["--task", "aime24", "--seed", str(2**64)], "--seed must be >= 0 and <= 4294967295"),
        (evaluate[:-1] + ["1000000000", "--task", "aime24", "--limit", "2"],
         "--max-new-tokens 1000000000: with the longest prompt"),
        (evaluate + ["--task", "gsm8k", "--data", str(gsm)], "gsm.jsonl: row 1: no gold answer after '####'"),
        (evaluate + ["--task", "aime24", "--data", str(nan)], "row 1: answer must be a non-empty"),
        (evaluate + ["--task", "aime24", "--data", str(deep)], "deep.jsonl:1: JSON nested too deep to be a row"),
        (["compare", "a", "./a"], "compare a with itself"),
        (["compare", str(unverdicted), str(unverdicted.parent / "b")], "a result row without its verdicts"),
        (["eval", "--model", model, "--task", "aime24", "--out", "x" * 300], "longer than a file system allows"),
    ]


def test_each_bad_input_is_one_line_before_anything_loads_and_nothing_is_left(tiny_qwen3, tmp_path, monkeypatch,
                                                                                capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "a").mkdir()
    (work / "a" / "summary.json").write_text('{"mine": true}')  # the user's file: never touched
    monkeypatch.chdir(work)
    before = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    failures = []
    for argv, message in _cases(tiny_qwen3, tmp_path):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        after = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
        if code != 2 or message not in err or "\n" in err or after != before:
            failures.append(f"{' '.join(argv)[:120]} -> {code}: {err[:300]!r} (left: {set(after) - set(before)})")
    assert not failures, "\n".join(failures)
    assert (work / "a" / "summary.json").read_text() == '{"mine": true}'


def test_a_value_at_its_bound_still_runs_the_dry_run(capsys):
    assert main(["run", SMOKE, "--dry-run", "--set", f"seed={2**32 - 1}", "--set", "model.max_seq_length=17"]) == 0
    assert "is valid" in capsys.readouterr().out


def test_every_minerva_gold_equals_itself():
    """4 of Minerva's 272 golds are LaTeX math-verify cannot parse; the same text is still the same answer,
    so a completion that writes the gold exactly is right in every column."""
    from aha.eval import grade, load_task

    for p in load_task("minerva"):
        verdict = grade(f"so \\boxed{{{p.answer}}}", p.answer, "boxed", grader="math")
        assert verdict["strict"] and verdict["math_verify"], p.id


@pytest.mark.parametrize("other, same_numbers, copy", [
    ("{q} Provide your answer as a single integer.", False, True),   # an instruction sentence added
    ("{q} Express your answer in simplest form.", True, True),
    ("{q} Provide your answer as a single integer.", True, True),
    ("{first}", False, False),                                        # the setup alone asks nothing: not the problem
    ("{setup} Find the product of the two numbers.", False, False),   # the same setup, another question
    ("{q_other_number}", True, False),                                # another number: another problem ...
    ("{q_other_number}", False, True),                                # ... which DAPO's words-only rule still drops
])
def test_a_rewording_that_adds_or_drops_a_sentence_is_a_copy(other, same_numbers, copy):
    from aha.eval.tasks import reworded, rewording_key

    setup = "Two positive integers differ by 12 and their squares differ by 840."
    q = f"{setup} What is the sum of the two integers?"
    text = other.format(q=q, first=setup, setup=setup, q_other_number=q.replace("840", "480"))
    for a, b in ((q, text), (text, q)):  # either way round
        assert reworded(rewording_key(a, same_numbers), rewording_key(b, same_numbers)) is copy, (a, b)


@pytest.fixture
def read_only_disk(tmpfs):
    """A real read-only filesystem (tmpfs), mounted for the test; skipped where it cannot be."""
    return tmpfs("ro", "ro,size=1m")


def test_output_on_a_read_only_file_system_is_one_line(read_only_disk, tmp_path, capsys):
    before, after = tmp_path / "before", tmp_path / "after"
    for folder in (before, after):
        folder.mkdir()
        (folder / "samples.jsonl").write_text(json.dumps({"id": "p1", "answer": "1", "samples": [
            {"text": "1", "strict": True, "lenient": True, "format_ok": True, "math_verify": True}]}) + "\n")
    for argv in (["compare", str(before), str(after), "--out", str(read_only_disk / "report")],
                 ["eval", "--model", "builtin:tiny-qwen3", "--task", "aime24", "--out", str(read_only_disk / "out")],
                 ["run", SMOKE, "--out", str(read_only_disk / "run")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is not writable" in err, err
    assert list(read_only_disk.iterdir()) == []
