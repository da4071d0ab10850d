"""The benchmarks reasoning-model users report, offline: every task loads from its shipped
file with the size its source has, every reference solution grades right, and no
problem's answer grades right against another problem's gold."""

import json
import random
import re

import pytest

from aha.eval import grade, load_task
from aha.eval.tasks import TASKS
from aha.formats import get_format
from aha.recipes.cli import main

SHIPPED = [name for name, task in TASKS.items() if task.file]
LATEX = [name for name, task in TASKS.items() if task.grader == "math"]
# Reference solutions that do not grade right, each with the reason (the README lists them too).
KNOWN_EXCEPTIONS = {"aime24-60": "its AoPS solution states the answer without \\boxed{} and ends with the author's "
                                 "name, sepehr2010, so the last number read is 2010"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tasks_load_offline_with_their_sizes(name):
    problems = load_task(name)
    assert len(problems) == TASKS[name].size
    assert len({p.id for p in problems}) == len(problems)  # stable, unique ids
    assert all(p.question.strip() and p.answer.strip() for p in problems)
    assert "\f" not in "".join(p.question for p in problems)  # no JSON escape read as a control character


def test_a_sample_of_golds_against_the_published_answers():
    """Golds checked by hand against the AoPS wiki and the MATH-500 problems they belong to."""
    golds = {p.id: p.answer for name in ("aime24", "aime25", "amc23", "math500") for p in load_task(name)}
    assert golds["aime24-60"] == "204"  # 2024 AIME I, problem 1 (Aya's walk)
    assert golds["aime25-90"] == "70" and golds["aime25-105"] == "468"  # 2025 AIME I #1, 2025 AIME II #1
    assert golds["amc23-0"] == "27"  # 2023 AMC 12A #1 (Alicia and Beth), stored as 27.0
    assert golds["math500-test/precalculus/807.json"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    minerva = load_task("minerva")[0]
    assert minerva.answer == "1.6" and minerva.solution.rstrip().endswith("\\boxed{1.6} \\mathrm{~cm}$.") is False


@pytest.mark.parametrize("name", [n for n in LATEX if any(p.solution for p in load_task(n))])
def test_every_reference_solution_grades_right(name):
    wrong = {p.id: grade(p.solution, p.answer, "boxed", grader=p.grader)["extracted"]
             for p in load_task(name) if p.solution and not grade(p.solution, p.answer, "boxed", grader=p.grader)[
                 "lenient"]}
    assert set(wrong) <= set(KNOWN_EXCEPTIONS), wrong
    solved = sum(1 for p in load_task(name) if p.solution) - len(wrong)
    assert solved / sum(1 for p in load_task(name) if p.solution) >= 0.96  # 29 of 30 on AIME 2024; all elsewhere


@pytest.mark.parametrize("name", LATEX)
def test_another_problems_answer_is_not_graded_right(name):
    problems = load_task(name)
    fmt = get_format("boxed")
    pairs = [(i, j) for i in range(len(problems)) for j in range(len(problems)) if i != j]
    pairs = random.Random(0).sample(pairs, min(len(pairs), 400))
    pairs = [(i, j) for i, j in pairs if problems[i].answer != problems[j].answer]
    right = [(problems[i].answer, problems[j].answer) for i, j in pairs
             if grade(fmt.render_completion("work", problems[i].answer), problems[j].answer, fmt, grader="math")["strict"]]
    assert len(right) / len(pairs) < 0.005, right


def test_equivalent_latex_answers_grade_right_and_plain_ones_stay_fast():
    fmt = get_format("boxed")
    for answer, gold in [("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"), ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
                         ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}", "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}"),
                         ("x = 18", "18"), ("27.0", "27")]:
        assert grade(fmt.render_completion("work", answer), gold, fmt, grader="math")["strict"], (answer, gold)
    # an equation is not its right-hand side
    assert not grade(fmt.render_completion("w", "5x - 7y + 4 = 0"), "0", fmt, grader="math")["strict"]


def test_the_instruction_follows_the_format(qwen3_tokenizer):
    problem = load_task("aime24")[0]
    boxed = get_format("boxed").build_prompt(qwen3_tokenizer, problem.question, problem.instruction)
    tags = get_format("unsloth").build_prompt(qwen3_tokenizer, problem.question, problem.instruction)
    assert "within \\boxed{}" in boxed and "\\boxed{}" not in tags and "<SOLUTION>" in tags


@pytest.mark.slow
def test_eval_on_aime24_writes_avg_at_k_and_its_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "aime"
    args = ["eval", "--model", "builtin:tiny-qwen3", "--task", "aime24", "--limit", "3", "--n", "2",
            "--temperature", "1.0", "--max-new-tokens", "8", "--format", "boxed", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    r = summary["results"]
    assert r["problems"] == 3 and "pass@1_strict" in r and len(r["pass@1_strict_ci95"]) == 2 and "maj@2" in r
    assert summary["config"]["grader"] == "math" and "\\boxed{}" in summary["config"]["instruction"]
    assert json.loads((out / "greedy" / "summary.json").read_text())["config"]["sampling"]["temperature"] == 0.0
    assert main(args) == 0  # resumes: nothing to do
    assert main(args[:-2] + ["--format", "unsloth", "--out", str(out)]) == 2  # another prompt: refused


# ----- DAPO-Math, shipped ---------------------------------------------------------------------------------------
def test_dapo_math_ships_a_clean_split_that_loads_offline():
    """The held-out split and the training rows load offline, never share a problem (nor a
    reworded one), and the held-out problems are the ones ``dapo_split`` picks from them all."""
    from aha.eval.tasks import dapo_split, near_duplicate, normalize_question, question_words, reworded, rewording_key

    held, train = load_task("dapo-math"), load_task("dapo-math", split="train")
    assert (len(held), len(train)) == (200, 95)
    assert not {normalize_question(p.question) for p in held} & {normalize_question(p.question) for p in train}
    assert not any(near_duplicate(question_words(a.question), question_words(b.question)) for a in held for b in train)
    assert not any(reworded(rewording_key(a.question), rewording_key(b.question)) for a in held for b in train)
    assert {p.id for p in dapo_split(held + train, 200)[1]} == {p.id for p in held}
    assert all(re.fullmatch(r"-?\d+", p.answer) for p in held + train)  # DAPO's answers are integers
    assert not any(re.search(r"[\u4e00-\u9fff]", p.question) for p in held + train)  # the English problems


def test_dapo_math_golds_grade_right_in_every_format():
    for p in load_task("dapo-math") + load_task("dapo-math", split="train"):
        for name in ("dapo", "unsloth", "boxed"):
            fmt = get_format(name)
            assert grade(fmt.render_completion("Work.", p.answer), p.answer, fmt, grader=p.grader)["strict"], (name, p.id)
        assert not grade(get_format("dapo").render_completion("Work.", str(int(p.answer) + 1)), p.answer, "dapo")["strict"]


def _verl_on_shipped():
    from pathlib import Path

    return json.loads((Path(__file__).parent / "data" / "dapo_shipped_verl.json").read_text(encoding="utf-8"))["score"]


def test_faithful_dapo_reward_equals_verl_on_the_shipped_golds():
    """verl's own grader's outputs on 1,184 completions written for the shipped golds (four
    variants each: the answer line plain, boxed, in words, with units, too early, wrong)."""
    from aha.rewards import check_dapo_answer

    table = _verl_on_shipped()
    golds = {p.answer for p in load_task("dapo-math") + load_task("dapo-math", split="train")}
    assert len(table) == 4 * 296 and golds <= {gold for _, gold, _ in table}  # the table also holds a row since dropped
    texts, answers, expected = zip(*table)
    assert check_dapo_answer(list(texts), answer=list(answers), mode="faithful") == list(expected)


def test_dapo_training_rows_from_another_copy_leave_the_held_out_problems_out(tmp_path, capsys):
    """Training rows read from a copy of the full set (a file here, the hub for users) lose every
    held-out problem, reworded ones too, and questions whose copies disagree on the answer."""
    held = load_task("dapo-math")
    rows = [{"prompt": p.question, "solution": p.answer} for p in held[:5]]
    rows += [{"prompt": held[5].question.replace(".", ". ", 1) + " Answer as an integer.", "solution": held[5].answer}]
    rows += [{"prompt": "A new problem: how many primes are below 30?", "solution": "10"},
             {"prompt": "Conflict: what is x?", "solution": "1"}, {"prompt": "conflict: what is x?", "solution": "2"}]
    path = tmp_path / "dapo.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert [p.question for p in load_task("dapo-math", path=path, split="train")] == [
        "A new problem: how many primes are below 30?"]
    assert main(["eval", "--model", "x/y", "--task", "dapo-math", "--hub", "--out", str(tmp_path / "o")]) == 2
    assert "the hub copy has no held-out split" in capsys.readouterr().err
