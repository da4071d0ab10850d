"""Paired before/after report: per-problem changes, exact McNemar test, markdown and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aha.formats import InputError

from .files import read_json, write_json
from .metrics import VERDICTS
from .runner import FINGERPRINT_FILE, SAMPLES_FILE, read_done
from .stats import mcnemar_exact, pooled_paired_test, sign_test, spread

METRICS = VERDICTS  # every verdict can be compared


def _load(run: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(run)
    samples = path / SAMPLES_FILE if path.is_dir() else path
    if not samples.is_file():
        raise InputError(f"no evaluation results at {run} (expected {SAMPLES_FILE})")
    return read_done(samples)


def mixed_engines(x: dict[str, Any], y: dict[str, Any]) -> list[str]:
    """How two evaluations' fingerprints differ in engine and length.

    >>> mixed_engines({"backend": "hf", "sampling": {"max_new_tokens": 64}}, {"backend": "vllm", "sampling": {"max_new_tokens": 64}})
    ['backend hf vs vllm']
    """
    pairs = [("backend", x.get("backend"), y.get("backend")),
             ("max_new_tokens", (x.get("sampling") or {}).get("max_new_tokens"),
              (y.get("sampling") or {}).get("max_new_tokens"))]
    return [f"{name} {u} vs {v}" for name, u, v in pairs if u != v]


def paired_ids(before: str | Path, after: str | Path,
               allow_mixed: bool = False) -> tuple[dict, dict, list[str], list[str]]:
    """The two runs' rows, the ids they share and how they were generated differently
    (:func:`mixed_engines`; empty when either has no fingerprint), after checking that the runs can be
    compared at all: the same format and sampling, the same engine (two engines' greedy texts
    part at near-ties, so their difference would be the engine's as much as the model's; taken
    with ``allow_mixed``, which also lets the lengths differ), as many answers a problem, and
    for every shared id the same question and gold answer (ids alone say nothing about which
    problem a row holds)."""
    a, b = _load(before), _load(after)
    prints = [Path(r) / FINGERPRINT_FILE for r in (before, after)]
    mixed: list[str] = []
    if all(p.is_file() for p in prints):
        x, y = (read_json(p) for p in prints)
        mixed = mixed_engines(x, y)
        if mixed and not allow_mixed:
            raise InputError(f"{before} and {after} were not generated alike ({', '.join(mixed)}): a difference would "
                             "mix the engine's with the model's; evaluate both the same way, or pass --allow-mixed")
        graders = [str(f.get("grader", "numeric")) for f in (x, y)]  # the fingerprint names any other grader
        if graders[0] != graders[1]:
            if not allow_mixed:
                raise InputError(f"{before} and {after} were graded differently ({graders[0]} vs {graders[1]}): a "
                                 "difference would be the graders' as much as the model's; grade both the same way, "
                                 "or pass --allow-mixed")
            mixed.append(f"grader {graders[0]} vs {graders[1]}")
        for key in ("format", "format_sha256", "sampling"):
            u, v = x.get(key), y.get(key)
            if key == "sampling" and allow_mixed and isinstance(u, dict) and isinstance(v, dict):
                u, v = ({k: w for k, w in d.items() if k != "max_new_tokens"} for d in (u, v))
            if u != v:
                raise InputError(f"{before} and {after} are not comparable: their {key} differs "
                                 f"({x.get(key)!r} vs {y.get(key)!r})")
    common = [i for i in a if i in b]
    if not common:
        raise InputError("the two runs share no problem ids: they are not the same task")
    ks = {len(a[common[0]]["samples"]), len(b[common[0]]["samples"])}
    if len(ks) > 1:
        raise InputError(f"{before} and {after} hold {' and '.join(map(str, sorted(ks)))} answers a problem: compare "
                         "greedy with greedy, sampled with sampled")
    for i in common:
        if a[i].get("question") != b[i].get("question") or str(a[i].get("answer")) != str(b[i].get("answer")):
            raise InputError(f"{before} and {after} are not the same problems: {i} is "
                             f"{str(a[i].get('question'))[:40]!r} (gold {a[i].get('answer')!r}) in one and "
                             f"{str(b[i].get('question'))[:40]!r} (gold {b[i].get('answer')!r}) in the other")
    return a, b, common, mixed


def compare(before: str | Path, after: str | Path, metric: str = "lenient", allow_mixed: bool = False) -> dict[str, Any]:
    """Pair two evaluations of the same problems by id."""
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    a, b, common, mixed = paired_ids(before, after, allow_mixed)
    report: dict[str, Any] = {"before": str(before), "after": str(after), "problems": len(common),
                              "only_in_one_run": len(set(a) ^ set(b)), "mixed": mixed,
                              "metrics": {}}
    for m in METRICS:
        x = [bool(a[i]["samples"][0][m]) for i in common]
        y = [bool(b[i]["samples"][0][m]) for i in common]
        fixed = [i for i, u, v in zip(common, x, y) if v and not u]
        broken = [i for i, u, v in zip(common, x, y) if u and not v]
        report["metrics"][m] = {
            "before": sum(x) / len(common), "after": sum(y) / len(common), "delta": (sum(y) - sum(x)) / len(common),
            "fixed": len(fixed), "broken": len(broken), "p_value": mcnemar_exact(len(fixed), len(broken)),
            "fixed_ids": fixed, "broken_ids": broken,
        }
    report["primary_metric"] = metric
    return report


def compare_pass_rates(before: str | Path, after: str | Path, metric: str = "strict",
                       allow_mixed: bool = False) -> dict[str, Any]:
    """Pair two sampled evaluations (k answers per problem) by problem: the mean pass rate
    before and after, how many problems went up or down, and an exact sign test."""
    a, b, common, mixed = paired_ids(before, after, allow_mixed)
    rate = lambda row: sum(bool(g[metric]) for g in row["samples"]) / len(row["samples"])  # noqa: E731
    x, y = [rate(a[i]) for i in common], [rate(b[i]) for i in common]
    up = sum(1 for u, v in zip(x, y) if v > u)
    down = sum(1 for u, v in zip(x, y) if v < u)
    return {"problems": len(common), "k": len(a[common[0]]["samples"]), "metric": metric,
            "before": sum(x) / len(x), "after": sum(y) / len(y), "improved": up, "worsened": down,
            "unchanged": len(common) - up - down, "p_value": sign_test(up, down), "mixed": mixed}


def too_small_note(problems: int, result: dict[str, Any]) -> str:
    """What a paired difference that is not significant means on a set this size.

    >>> too_small_note(30, {"fixed": 2, "broken": 0, "delta": 2 / 30, "p_value": 0.5})
    'Not significant (exact McNemar p = 0.5): on 30 problems one problem is 3.3 points, and +6.7 points (2 fixed, 0 broken) cannot be told from noise; even 6 fixed and none broken would be needed for p < 0.05.'
    """
    need = next(n for n in range(1, 1000) if mcnemar_exact(n, 0) < 0.05)
    return (f"Not significant (exact McNemar p = {result['p_value']:.3g}): on {problems} problems one problem is "
            f"{100 / problems:.1f} points, and {100 * result['delta']:+.1f} points ({result['fixed']} fixed, "
            f"{result['broken']} broken) cannot be told from noise; even {need} fixed and none broken would be "
            "needed for p < 0.05.")


def to_markdown(report: dict[str, Any], examples: int = 5) -> str:
    lines = [f"# Before vs after ({report['problems']} paired problems)", "",
             f"- before: `{report['before']}`", f"- after: `{report['after']}`", "",
             "| metric | before | after | delta | fixed | broken | McNemar p |", "|---|---|---|---|---|---|---|"]
    for m, r in report["metrics"].items():
        lines.append(f"| {m} | {r['before']:.1%} | {r['after']:.1%} | {r['delta']:+.1%} | {r['fixed']} | "
                     f"{r['broken']} | {r['p_value']:.3g} |")
    primary = report["metrics"][report["primary_metric"]]
    lines += ["", too_small_note(report["problems"], primary)] if primary["p_value"] >= 0.05 else []
    lines += ["", f"Problems fixed ({report['primary_metric']}), first {examples}: "
              + (", ".join(primary["fixed_ids"][:examples]) or "none"),
              f"Problems broken ({report['primary_metric']}), first {examples}: "
              + (", ".join(primary["broken_ids"][:examples]) or "none")]
    if report["only_in_one_run"]:
        lines.append(f"\n{report['only_in_one_run']} problems appear in only one run and are not compared.")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["metrics"])
    before = [report["metrics"][m]["before"] * 100 for m in names]
    after = [report["metrics"][m]["after"] * 100 for m in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], before, 0.4, label="before", color="#9aa5b1")
    ax.bar([x + 0.2 for x in xs], after, 0.4, label="after", color="#2f6fde")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("% of problems")
    ax.set_ylim(0, 100)
    ax.set_title(f"Before vs after, {report['problems']} paired problems")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def answers_per_problem(run: str | Path) -> int:
    """How many answers each problem of an evaluation holds: 1 for a greedy evaluation, k for a
    sampled one (``eval.sampled_k``)."""
    rows = _load(run)
    return len(next(iter(rows.values()))["samples"]) if rows else 1


COMPARE_FILE = "compare.json"  # write_report's report (its markdown and chart beside it)


def write_report(before: str | Path, after: str | Path, out_dir: str | Path, metric: str = "lenient",
                 allow_mixed: bool = False) -> dict[str, Any]:
    """``compare.json`` and ``compare.md`` in ``out_dir`` (and ``compare.png`` for greedy runs).
    Sampled evaluations (k answers a problem) are compared on their pass rates, greedy ones on
    each problem's one answer."""
    sampled = answers_per_problem(before) > 1
    how = compare_pass_rates if sampled else compare
    report = how(before, after, metric, allow_mixed=allow_mixed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / COMPARE_FILE, report)
    text = pass_rates_markdown(report) if sampled else to_markdown(report)
    if report["mixed"]:
        text += (f"\nGenerated differently ({', '.join(report['mixed'])}; --allow-mixed): part of each difference is "
                 "the engine's, not the model's.\n")
    (out / "compare.md").write_text(text, encoding="utf-8")
    if not sampled:
        plot(report, out / "compare.png")
    return report


def pass_rates_markdown(report: dict[str, Any]) -> str:
    """One sampled comparison (:func:`compare_pass_rates`) as markdown."""
    return (f"# Sampled pass rate before vs after (k={report['k']}, {report['problems']} paired problems)\n\n"
            f"| metric | before | after | delta | problems up | down | sign test p |\n|---|---|---|---|---|---|---|\n"
            f"| {report['metric']} | {report['before']:.1%} | {report['after']:.1%} | "
            f"{report['after'] - report['before']:+.1%} | {report['improved']} | {report['worsened']} | "
            f"{report['p_value']:.3g} |\n")


# ----- several replicates (seeds) pooled -------------------------------------------------------------------------
def pool(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired comparisons of independent replicates (one :func:`compare` report each, say one
    per seed), pooled per metric: the stratified exact test on the discordant pairs
    (:func:`aha.eval.stats.pooled_paired_test`) and the spread of the per-replicate deltas."""
    if not reports:
        raise InputError("nothing to pool: no comparisons")
    out: dict[str, Any] = {"replicates": len(reports), "problems": sum(r["problems"] for r in reports),
                           "primary_metric": reports[0]["primary_metric"], "metrics": {}}
    for m in METRICS:
        rows = [r["metrics"][m] for r in reports]
        out["metrics"][m] = {**pooled_paired_test([(x["fixed"], x["broken"]) for x in rows]),
                             "before": [x["before"] for x in rows], "after": [x["after"] for x in rows],
                             "delta": spread([x["delta"] for x in rows])}
    return out


def pool_pass_rates(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Sampled comparisons (:func:`compare_pass_rates`) of independent replicates, pooled: the
    sign test on every replicate's problems that went up or down, and the spread of the
    per-replicate changes in mean pass rate."""
    up, down = sum(r["improved"] for r in reports), sum(r["worsened"] for r in reports)
    return {"replicates": len(reports), "problems": sum(r["problems"] for r in reports), "k": reports[0]["k"],
            "improved": up, "worsened": down, "p_value": sign_test(up, down),
            "before": [r["before"] for r in reports], "after": [r["after"] for r in reports],
            "delta": spread([r["after"] - r["before"] for r in reports])}


def pooled_markdown(pooled: dict[str, Any], labels: list[str] | None = None) -> str:
    """A pooled greedy comparison as markdown: per replicate, then pooled."""
    labels = labels or [f"pair {i + 1}" for i in range(pooled["replicates"])]
    lines = [f"{pooled['replicates']} replicates, {pooled['problems']} paired problems in all. Pooled: the "
             "Mantel-Haenszel test for matched pairs stratified by replicate, which is McNemar's exact test on the "
             "pooled discordant pairs.", "",
             "| metric | " + " | ".join(labels) + " | pooled fixed / broken | pooled p | delta mean (sd; min .. max) |",
             "|---" * (len(labels) + 4) + "|"]
    for m, r in pooled["metrics"].items():
        cells = [f"{b:.1%} -> {a:.1%}" for b, a in zip(r["before"], r["after"])]
        d = r["delta"]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {r['fixed']} / {r['broken']} | {r['p_value']:.3g} | "
                     f"{d['mean']:+.1%} ({d['sd']:.1%}; {d['min']:+.1%} .. {d['max']:+.1%}) |")
    return "\n".join(lines) + "\n"


def pooled_pass_rates_markdown(pooled: dict[str, Any], labels: list[str] | None = None) -> str:
    """Pooled sampled comparisons (:func:`pool_pass_rates`) as markdown: per replicate, then pooled."""
    labels = labels or [f"pair {i + 1}" for i in range(pooled["replicates"])]
    d = pooled["delta"]
    return ("| | " + " | ".join(labels) + " | pooled up / down | sign test p | delta mean (sd; min .. max) |\n"
            + "|---" * (len(labels) + 4) + "|\n"
            + f"| mean pass rate (k={pooled['k']}) | "
            + " | ".join(f"{b:.1%} -> {a:.1%}" for b, a in zip(pooled["before"], pooled["after"]))
            + f" | {pooled['improved']} / {pooled['worsened']} | {pooled['p_value']:.3g} | {d['mean']:+.1%} "
            f"({d['sd']:.1%}; {d['min']:+.1%} .. {d['max']:+.1%}) |\n")


def pair_labels(paths: list[str | Path]) -> list[str]:
    """Short names for several results folders: their path parts that differ.

    >>> pair_labels(["runs/all/replicate-0/eval-after/arith-l1", "runs/all/replicate-1/eval-after/arith-l1"])
    ['replicate-0', 'replicate-1']
    >>> pair_labels(["a/x", "a/x"])
    ['pair 1', 'pair 2']
    """
    parts = [Path(p).parts for p in paths]
    head = 0
    while all(len(q) > head for q in parts) and len({q[head] for q in parts}) == 1:
        head += 1
    tail = 0
    while all(len(q) > head + tail for q in parts) and len({q[len(q) - 1 - tail] for q in parts}) == 1:
        tail += 1
    labels = ["/".join(q[head:len(q) - tail]) for q in parts]
    return labels if all(labels) and len(set(labels)) == len(labels) else [f"pair {i + 1}" for i in range(len(paths))]


def write_pooled_report(pairs: list[tuple[str | Path, str | Path]], out_dir: str | Path,
                        metric: str = "lenient", allow_mixed: bool = False) -> dict[str, Any]:
    """``aha compare B1 A1 B2 A2 ...``: each pair compared (written in its after folder, as for
    one pair), then all pooled into ``pooled.json`` and ``pooled.md`` in ``out_dir``: greedy
    evaluations by the stratified McNemar test, sampled ones by the sign test on pass rates."""
    afters = [str(Path(a).resolve()) for _, a in pairs]
    twice = sorted({a for a in afters if afters.count(a) > 1})
    if twice:  # pooling one comparison twice would count its evidence twice
        raise InputError(f"{twice[0]} is the after of {afters.count(twice[0])} pairs: each evaluation is pooled once")
    kinds = {answers_per_problem(f) > 1 for pair in pairs for f in pair}
    if len(kinds) > 1:
        raise InputError("the pairs mix greedy and sampled evaluations: pool greedy with greedy, sampled with sampled")
    reports = [write_report(b, a, a, metric, allow_mixed) for b, a in pairs]
    labels = pair_labels([a for _, a in pairs])
    if kinds == {True}:
        pooled = pool_pass_rates(reports)
        text = "# Pooled sampled pass rate, before vs after\n\n" + pooled_pass_rates_markdown(pooled, labels)
    else:
        pooled = pool(reports)
        text = "# Pooled before vs after\n\n" + pooled_markdown(pooled, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pooled.json", {**pooled, "pairs": [[str(b), str(a)] for b, a in pairs]})
    (out / "pooled.md").write_text(text, encoding="utf-8")
    return pooled
