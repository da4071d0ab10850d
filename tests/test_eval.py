import json
import os
import subprocess
import sys

import pytest

from aha.eval import HFBackend, Sampling, dapo_split, evaluate, load_model, load_task, make_arith, summarize
from aha.eval.compare import mcnemar_exact, write_report
from aha.recipes.cli import main


# ----- tasks -----------------------------------------------------------------------------
def test_gsm8k_local_file(tmp_path):
    path = tmp_path / "gsm.jsonl"
    rows = [{"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": "3*4=<<3*4=12>>12 apples\n#### 12"},
            {"question": "What is 1,000 + 234?", "answer": "1000+234=<<1000+234=1234>>1234\n#### 1,234"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    problems = load_task("gsm8k", path=path)
    assert [p.answer for p in problems] == ["12", "1,234"]
    assert problems[0].solution == "3*4=12 apples"
    assert len({p.id for p in problems}) == 2


def _dapo_rows():
    import random

    words = ("apple pear circle square prime digit sum product triangle chord radius angle grid coin dice path "
             "tower river clock sequence").split()
    rows = [{"prompt": f"Problem {i}: " + " ".join(random.Random(i).sample(words, 10)) + ", what do they cost?",
             "solution": str(i * (i + 3))} for i in range(60)]
    rows += [{"prompt": rows[3]["prompt"].upper().replace(" ", "  "), "solution": rows[3]["solution"]}]
    rows += [{"prompt": "Conflict: what is x?", "solution": "1"}, {"prompt": "conflict: what is  x?", "solution": "2"}]
    return rows


def test_dapo_split_is_clean_and_shared_with_training():
    from aha.eval.tasks import dapo_training, dapo_unique

    problems = dapo_unique(_dapo_rows(), "rows")
    assert len(problems) == 60  # the case/space duplicate folded, the conflicting pair dropped
    train, held = dapo_split(problems, heldout=10, seed=0)
    assert len(held) == 10 and len(train) == 50
    assert not {p.question.lower() for p in train} & {p.question.lower() for p in held}
    again_train, again_held = dapo_split(dapo_unique(list(reversed(_dapo_rows())), "rows"), heldout=10, seed=0)
    assert {p.id for p in again_held} == {p.id for p in held}  # row order does not change the split
    # A reworded copy of a held-out problem never reaches training, from any copy of the data.
    reworded = held[0].question.replace("what do they cost?", "what do they all cost?")
    assert len(dapo_training(dapo_unique(_dapo_rows() + [{"prompt": reworded, "solution": "1"}], "rows"), held)) == 50


def test_arith_is_seeded_and_exact():
    a, b = make_arith(50, level=2, seed=1), make_arith(50, level=2, seed=1)
    assert a == b and a != make_arith(50, level=2, seed=2)
    assert all(int(p.answer) >= 0 for p in a)
    with pytest.raises(ValueError, match="level"):
        make_arith(5, level=9)


# ----- backend, evaluation, resume ----------------------------------------------------------
def test_hf_batched_equals_one_at_a_time(tiny_qwen3):
    model, tokenizer = load_model(str(tiny_qwen3), dtype="float32")
    problems = make_arith(6, seed=0)
    from aha.formats import get_format

    prompts = [get_format("unsloth").build_prompt(tokenizer, p.question) for p in problems]
    sampling = Sampling(max_new_tokens=12)
    batched = HFBackend(model, tokenizer, batch_size=6).generate(prompts, sampling)
    single = HFBackend(model, tokenizer, batch_size=1).generate(prompts, sampling)
    assert [g[0].text for g in batched] == [g[0].text for g in single]
    assert all(g[0].num_tokens == 12 and g[0].truncated for g in batched)  # random weights never stop early


def test_adapter_is_applied(tiny_qwen3, tiny_adapter, tmp_path):
    problems = make_arith(4, seed=0)
    base = evaluate(HFBackend(*load_model(str(tiny_qwen3))), problems, tmp_path / "base", "unsloth",
                    Sampling(max_new_tokens=8), progress=False)
    tuned = evaluate(HFBackend(*load_model(str(tiny_qwen3), adapter=str(tiny_adapter))), problems, tmp_path / "tuned",
                     "unsloth", Sampling(max_new_tokens=8), progress=False)
    texts = lambda d: [json.loads(line)["samples"][0]["text"] for line in open(d / "samples.jsonl")]
    assert texts(tmp_path / "base") != texts(tmp_path / "tuned")
    assert base["results"]["problems"] == tuned["results"]["problems"] == 4


def test_sampling_n_gives_pass_and_maj(tiny_qwen3, tmp_path):
    """n samples per problem: pass@1, pass@n and maj@n from the generations themselves."""
    summary = evaluate(HFBackend(*load_model(str(tiny_qwen3))), make_arith(3), tmp_path, "unsloth",
                       Sampling(max_new_tokens=4, temperature=1.0, n=3), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [len(r["samples"]) for r in rows] == [3, 3, 3]
    right = [sum(g["lenient"] for g in r["samples"]) for r in rows]
    assert summary["results"]["pass@1_lenient"] == pytest.approx(sum(right) / 9)
    assert summary["results"]["pass@3_lenient"] == pytest.approx(sum(c > 0 for c in right) / 3)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(n=2)


def _sample(extracted, right):
    return {"extracted": extracted, "strict": right, "lenient": right, "math_verify": right, "format_ok": True,
            "truncated": False, "num_tokens": 3}


def test_pass_and_maj_on_hand_worked_rows():
    """Worked by hand: A is right once in three (the majority, 5, is wrong); B is right
    twice (the majority, 4, is right); C never. pass@1 = (1/3 + 2/3 + 0) / 3 = 1/3;
    pass@3 = 2/3 (A and B); maj@3 = 1/3 (B only)."""
    rows = [{"answer": "4", "samples": [_sample("4", True), _sample("5", False), _sample("5", False)]},
            {"answer": "4", "samples": [_sample("4", True), _sample("4", True), _sample("7", False)]},
            {"answer": "4", "samples": [_sample("1", False), _sample("2", False), _sample("3", False)]}]
    metrics = summarize(rows)
    assert metrics["pass@1_lenient"] == pytest.approx(1 / 3) and metrics["pass@3_lenient"] == pytest.approx(2 / 3)
    assert metrics["maj@3"] == pytest.approx(1 / 3)
    assert metrics["accuracy_strict"] == pytest.approx(2 / 3)  # greedy-style accuracy reads the first sample


RESUME_SCRIPT = """
import sys
from aha.eval import HFBackend, Sampling, evaluate, load_model, make_arith
backend = HFBackend(*load_model(sys.argv[1], dtype="float32"), batch_size=2)
evaluate(backend, make_arith(12, seed=5), sys.argv[2], "unsloth", Sampling(max_new_tokens=6), chunk=2, progress=False)
"""


def test_resume_after_kill_gives_same_metrics(tiny_qwen3, tmp_path, kill_points):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    paused = tmp_path / "paused.py"
    paused.write_text(kill_points.preamble + RESUME_SCRIPT)  # waits once 4 of the 12 rows are written: killed there
    proc = kill_points.paused_at("lines:4", tmp_path / "reached", [str(paused), str(tiny_qwen3), str(killed)],
                                 dict(os.environ))
    samples = killed / "samples.jsonl"
    kill_points.kill(proc, tmp_path / "reached")
    lines_at_kill = len(samples.read_text().splitlines())
    assert 4 <= lines_at_kill < 12, "the run must be killed mid-way"
    with open(samples, "a") as fh:
        fh.write('{"id": "arith-l1-s5-9", "question": "torn wri')  # a write cut off by the kill
    subprocess.run([sys.executable, str(script), str(tiny_qwen3), str(killed)], check=True)
    subprocess.run([sys.executable, str(script), str(tiny_qwen3), str(clean)], check=True)
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12
    resumed = json.loads((killed / "summary.json").read_text())["results"]
    uninterrupted = json.loads((clean / "summary.json").read_text())["results"]
    assert resumed == uninterrupted


# ----- metrics and the paired report ------------------------------------------------------------
def _row(i, lenient, strict=False):
    g = {"extracted": "1", "format_ok": strict, "strict": strict, "lenient": lenient, "math_verify": lenient,
         "truncated": False, "num_tokens": 5, "text": ""}
    return {"id": f"p{i}", "question": "q", "answer": "1", "samples": [g]}


def test_compare_report(tmp_path):
    before = [_row(i, i < 5) for i in range(40)]                    # 5 right
    after = [_row(i, i < 20 and i != 0, strict=i < 10) for i in range(40)]  # 19 right: 15 fixed, 1 broken
    for name, rows in (("before", before), ("after", after)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = write_report(tmp_path / "before", tmp_path / "after", tmp_path / "report")
    lenient = report["metrics"]["lenient"]
    assert (lenient["fixed"], lenient["broken"]) == (15, 1)
    assert lenient["p_value"] == pytest.approx(mcnemar_exact(15, 1)) and lenient["p_value"] < 0.001
    assert lenient["broken_ids"] == ["p0"]
    assert (tmp_path / "report" / "compare.png").stat().st_size > 1000
    assert "| lenient | 12.5% | 47.5% | +35.0% | 15 | 1 |" in (tmp_path / "report" / "compare.md").read_text()
    assert summarize(after)["accuracy_lenient"] == 19 / 40


# ----- the command ---------------------------------------------------------------------------------
def test_cli_eval_and_compare(tiny_qwen3, tiny_adapter, tmp_path, capsys):
    common = ["eval", "--model", str(tiny_qwen3), "--task", "arith", "--limit", "4", "--max-new-tokens", "6"]
    assert main(common + ["--out", str(tmp_path / "b")]) == 0
    assert main(common + ["--adapter", str(tiny_adapter), "--out", str(tmp_path / "a")]) == 0
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "lenient" in out and (tmp_path / "a" / "compare.md").is_file()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["config"]["adapter"] == str(tiny_adapter) and "torch" in summary["versions"]


@pytest.mark.parametrize("argv,message", [
    (["eval", "--model", "/no/such/model", "--task", "arith", "--out", "x"], "--model: no such model folder: /no/such/model"),
    (["eval", "--model", "m", "--task", "arith", "--format", "nope", "--out", "x"], "unknown format"),
    (["eval", "--model", "m", "--task", "gsm8k", "--data", "/no/file.jsonl", "--out", "x"], "no such data file"),
    (["eval", "--model", "m", "--task", "arith", "--temperature", "0", "--n", "2", "--out", "x"], "temperature"),
    (["compare", "/no/a", "/no/b"], "no evaluation results"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("aha: error:") and message in err


# ----- results are never silently mixed ------------------------------------------------------------------
def _gsm8k_file(path, questions):
    path.write_text("".join(json.dumps({"question": q, "answer": f"x\n#### {a}"}) + "\n" for q, a in questions))
    return path


def test_resume_refuses_other_settings_or_other_problems(tiny_qwen3, tmp_path, capsys):
    out = tmp_path / "e"
    first = _gsm8k_file(tmp_path / "one.jsonl", [("What is 3+3?", 6), ("What is 2+2?", 4)])
    other = _gsm8k_file(tmp_path / "two.jsonl", [("x?", 1), ("y?", 2)])
    common = ["eval", "--model", str(tiny_qwen3), "--task", "gsm8k", "--out", str(out)]
    assert main(common + ["--data", str(first), "--max-new-tokens", "4"]) == 0
    before = (out / "samples.jsonl").read_text()
    capsys.readouterr()
    # Other sampling settings: the stored answers were made with 4 tokens, not 8.
    assert main(common + ["--data", str(first), "--max-new-tokens", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds results of another evaluation (sampling differ" in err and len(err.splitlines()) == 1
    # Another data file whose rows have the same ids: refused, not mixed.
    assert main(common + ["--data", str(other), "--max-new-tokens", "4"]) == 2
    assert "holds results for other problems (2 with the same id but another question" in capsys.readouterr().err
    assert (out / "samples.jsonl").read_text() == before  # nothing lost, nothing mixed
    # The same command resumes (here: nothing left to do).
    assert main(common + ["--data", str(first), "--max-new-tokens", "4"]) == 0


def test_compare_refuses_runs_of_other_problems(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, question, gold in ((a, "What is 3+3?", "6"), (b, "x?", "four")):
        folder.mkdir()
        row = {**_row(0, True), "question": question, "answer": gold}
        (folder / "samples.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["compare", str(a), str(b)]) == 2
    assert "are not the same problems: p0 is 'What is 3+3?' (gold '6')" in capsys.readouterr().err
    # A data file instead of a results folder, and results with a broken row: one line naming file and line.
    data = _gsm8k_file(tmp_path / "data.jsonl", [("q", 1)])
    assert main(["compare", str(data), str(b)]) == 2
    assert f"{data}:1: not a result row" in capsys.readouterr().err
    (a / "samples.jsonl").write_text(json.dumps({"id": "p0", "samples": []}) + "\n" + json.dumps(_row(1, True)) + "\n")
    assert main(["compare", str(a), str(b)]) == 2
    assert "samples.jsonl:1: not a result row" in capsys.readouterr().err
