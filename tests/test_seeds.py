"""Seeds as a feature: every seed moved per replicate, comparisons pooled across replicates
with a stratified exact test (checked on hand-made tables), and `--seeds 2` end to end."""

import json

import pytest

from aha.eval.compare import pool, pool_pass_rates
from aha.eval.stats import mcnemar_exact, pooled_paired_test, spread
from aha.recipes.cli import main


def _report(before, after, fixed, broken, n=200):
    metrics = {m: {"before": before, "after": after, "delta": after - before, "fixed": fixed, "broken": broken,
                   "p_value": mcnemar_exact(fixed, broken)} for m in ("strict", "lenient", "math_verify", "format_ok")}
    return {"problems": n, "metrics": metrics, "primary_metric": "strict"}


def test_pooled_test_on_hand_made_tables():
    # The issue's own case: a GRPO share of 20 fixed / 6 broken on one seed and 15 / 8 on another.
    one, two = _report(0.54, 0.61, 20, 6), _report(0.39, 0.425, 15, 8)
    pooled = pool([one, two])["metrics"]["strict"]
    assert (pooled["fixed"], pooled["broken"]) == (35, 14)
    assert pooled["p_value"] == pytest.approx(0.0038, abs=5e-5)  # 2 * P(X <= 14 | n = 49, 1/2), worked by hand
    assert mcnemar_exact(15, 8) > 0.2 > pooled["p_value"]  # the second seed alone shows nothing
    assert pooled["delta"]["mean"] == pytest.approx((0.07 + 0.035) / 2) and pooled["delta"]["min"] == pytest.approx(0.035)
    # Pooling is not averaging p-values: three seeds each at p = 0.0625 (4 fixed, 0 broken) pool to 12 / 0.
    assert pooled_paired_test([(4, 0)] * 3)["p_value"] == pytest.approx(2 / 2**12)
    # A seed that goes the other way counts against the others.
    assert pooled_paired_test([(20, 6), (6, 20)])["p_value"] == 1.0
    assert spread([0.1])["sd"] == 0.0


def test_pooled_pass_rates():
    rates = [{"problems": 50, "k": 4, "before": 0.28, "after": 0.48, "improved": 27, "worsened": 1},
             {"problems": 50, "k": 4, "before": 0.27, "after": 0.40, "improved": 19, "worsened": 1}]
    s = pool_pass_rates(rates)
    assert (s["improved"], s["worsened"]) == (46, 2) and s["p_value"] == pytest.approx(mcnemar_exact(46, 2))
    assert s["delta"]["min"] == pytest.approx(0.13)


def test_compare_pools_several_pairs(tmp_path, capsys):
    """`aha compare B1 A1 B2 A2 --out D`: each pair as before, all pooled into D/pooled.json;
    sampled evaluations (k answers a problem) pooled on their pass rates."""
    from aha.eval.runner import SAMPLES_FILE

    def folder(name, verdicts):  # one list of verdicts a problem: one answer greedy, k sampled
        path = tmp_path / name
        path.mkdir()
        rows = [{"id": f"p{i}", "question": f"q{i}", "answer": "1", "samples": [
            {"strict": v, "lenient": v, "math_verify": v, "format_ok": True, "extracted": "1", "truncated": False,
             "num_tokens": 3, "text": "x"} for v in (vs if isinstance(vs, list) else [vs])]} for i, vs in enumerate(verdicts)]
        (path / SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    pairs = [folder("b1", [0, 0, 0, 1]), folder("a1", [1, 1, 0, 1]), folder("b2", [0, 0, 1]), folder("a2", [1, 0, 0])]
    assert main(["compare", *pairs, "--metric", "strict"]) == 2
    assert "several pairs are pooled into one report" in capsys.readouterr().err
    assert main(["compare", *pairs[:3]]) == 2
    assert main(["compare", *pairs, "--metric", "strict", "--out", str(tmp_path / "pooled")]) == 0
    assert "| strict | 25.0% -> 75.0% | 33.3% -> 33.3% | 3 / 1 |" in capsys.readouterr().out  # labelled a1, a2
    pooled = json.loads((tmp_path / "pooled" / "pooled.json").read_text())
    assert pooled["replicates"] == 2 and pooled["problems"] == 7
    assert (pooled["metrics"]["strict"]["fixed"], pooled["metrics"]["strict"]["broken"]) == (3, 1)
    assert (tmp_path / "a1" / "compare.json").is_file()  # each pair is also compared on its own, as before

    # Sampled: 2 answers a problem. Pair 1: p0 0 -> 1/2, p1 1/2 -> 1, p2 1 -> 0; pair 2: p0 0 -> 1.
    sampled = [folder("sb1", [[0, 0], [1, 0], [1, 1]]), folder("sa1", [[1, 0], [1, 1], [0, 0]]),
               folder("sb2", [[0, 0]]), folder("sa2", [[1, 1]])]
    assert main(["compare", *sampled[:2], "--metric", "strict"]) == 0
    assert "| strict | 50.0% | 50.0% | +0.0% | 2 | 1 |" in capsys.readouterr().out
    assert main(["compare", *sampled, "--metric", "strict", "--out", str(tmp_path / "pooled-sampled")]) == 0
    s = json.loads((tmp_path / "pooled-sampled" / "pooled.json").read_text())
    assert (s["k"], s["improved"], s["worsened"]) == (2, 3, 1) and s["p_value"] == pytest.approx(mcnemar_exact(3, 1))
    assert s["before"] == [0.5, 0.0] and s["after"] == [0.5, 1.0]
    # Greedy against sampled is refused, within a pair and across pairs, in one line.
    assert main(["compare", pairs[0], sampled[0]]) == 2
    assert "hold 1 and 2 answers a problem" in capsys.readouterr().err
    assert main(["compare", *pairs[:2], *sampled[:2], "--out", str(tmp_path / "mixed")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mix greedy and sampled evaluations" in err


@pytest.mark.slow
def test_seeds_2_on_the_smoke_recipe(tmp_path):
    out = tmp_path / "seeds"
    args = ["run", "tiny-qwen3-smoke", "--seeds", "2", "--out", str(out), "--set", "grpo.max_steps=2",
            "--set", "sft.num_examples=8", "--set", "eval.tasks=[{task: arith, level: 1, limit: 8, seed: 0}]", "--set", "export.merged=false",
            "--set", "export.verify=false"]
    assert main(args) == 0
    recipes = [json.loads((out / f"replicate-{r}" / "state.json").read_text())["recipe"] for r in (0, 1)]
    assert [r["seed"] for r in recipes] == [3407, 4407] and [r["data"]["seed"] for r in recipes] == [1, 1001]
    assert [r["eval"]["tasks"][0]["seed"] for r in recipes] == [0, 1000]  # generated problems move too
    questions = [{json.loads(line)["question"] for line in
                  (out / f"replicate-{r}" / "eval-before" / "arith-l1" / "samples.jsonl").read_text().splitlines()}
                 for r in (0, 1)]
    assert not questions[0] & questions[1]
    report = json.loads((out / "seeds_report.json").read_text())
    assert report["replicates"] == [0, 1]
    grpo = report["greedy"]["arith-l1/grpo"]["metrics"]["lenient"]
    assert len(grpo["before"]) == 2 and grpo["delta"]["n"] == 2
    counted = {"fixed": 0, "broken": 0}  # the pooled counts are the replicates' own discordant pairs, added up
    for r in (0, 1):
        before, after = ({row["id"]: row["samples"][0]["lenient"] for row in map(json.loads, (
            out / f"replicate-{r}" / stage / "arith-l1" / "samples.jsonl").read_text().splitlines())}
            for stage in ("eval-after-sft", "eval-after"))
        counted["fixed"] += sum(not before[i] and after[i] for i in before)
        counted["broken"] += sum(before[i] and not after[i] for i in before)
    assert (grpo["fixed"], grpo["broken"]) == (counted["fixed"], counted["broken"])
    assert "arith-l1-sampled/grpo" in report["sampled"]
    text = (out / "seeds.md").read_text()
    assert "## arith-l1/grpo" in text and "pooled" in text
    # Re-running resumes (nothing runs again); other --set values into the same folder are refused.
    assert main(args) == 0
    assert main(args[:-2] + ["--set", "sft.num_examples=9"]) == 2
