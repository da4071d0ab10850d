"""Will GRPO learn? The preflight samples the policy GRPO starts from, with GRPO's own
sampling settings, on the training prompts, scores every completion with the recipe's
reward layers, and says in plain words what would make the run learn nothing.

What it measures, per reward layer and in total: mean, std and a histogram; the share of
groups whose rewards are all equal (no GRPO signal); truncation and the lengths finished
completions need; the format hit rate; each prompt's pass rate (format followed and
answer right) and pass@1 vs pass@k (the headroom GRPO can turn into pass@1); and each
layer's share of the advantage variance (so a format reward that drowns out the answer
reward shows).

With ``grpo.select: learnable`` it also picks GRPO's prompts: those whose pass rate is
strictly between 0 and 1, the only ones whose groups carry an answer signal (the idea of
DAPO's dynamic sampling, done once before training).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from aha.eval import grade, pass_at_k
from aha.eval.files import read_json, write_json
from aha.eval.stats import quantile
from aha.formats import Format

from ..config.schema import Recipe, RecipeError
from ..config.trl_args import global_batch, grpo_sampling

log = logging.getLogger("aha")
PREFLIGHT_FILE = "preflight.json"
SELECTED_FILE = "selected.json"


def prompts_needed(recipe: Recipe, processes: int = 1) -> int:
    """Distinct prompts GRPO consumes: steps x prompts per optimizer step (0: it trains by epochs)."""
    steps = int(recipe.grpo.args.max_steps)
    return steps * global_batch(recipe, processes)[1] if steps > 0 else 0


# ----- scoring ----------------------------------------------------------------------------------------------
def score_group(funcs: list[Any], weights: list[float], fmt: Format, row: dict[str, Any],
                texts: list[str], truncated: list[bool], lengths: list[int]) -> dict[str, Any]:
    """One prompt's group: every completion scored by every layer, as TRL would call them."""
    n = len(texts)
    columns = {k: [v] * n for k, v in row.items() if k != "prompt"}
    layers = {}
    for fn in funcs:
        values = fn(prompts=[row["prompt"]] * n, completions=texts, **columns)
        layers[fn.__name__] = [None if v is None else float(v) for v in values]
    totals = [sum(w * (layers[f.__name__][i] or 0.0) for f, w in zip(funcs, weights)) for i in range(n)]
    passed = [bool(grade(t, row["answer"], fmt)["strict"]) for t in texts]
    loops = [cut and repeats_itself(t) for t, cut in zip(texts, truncated)]
    return {"id": row.get("id"), "layers": layers, "total": totals, "passed": passed, "truncated": truncated,
            "loops": loops,
            "lengths": lengths, "format_ok": [fmt.check_format(t) for t in texts],
            "rewrites_prefill": [bool(fmt.prefill) and t.lstrip().startswith(fmt.prefill.strip()) for t in texts]}


LOOP_REPEAT_SHARE = 0.2  # a completion whose word 3-grams repeat this much is going round in circles


def repeats_itself(text: str) -> bool:
    """Does ``text`` go round in circles (a fifth or more of its word 3-grams are repeats)?
    Finished answers in step-by-step formats repeat some phrases; a runaway loop repeats
    most of them.

    >>> repeats_itself("63 - 35 = 28. 63 - 35 = 28. 63 - 35 = 28. 63 - 35"), repeats_itself("2 + 3 = 5, so 5.")
    (True, False)
    """
    from aha.rewards import get_reward

    return -get_reward("repetition_penalty", ngram=3)([text])[0] >= LOOP_REPEAT_SHARE


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def _histogram(xs: list[float], bins: int = 10) -> dict[str, list[float]]:
    if not xs:
        return {"edges": [], "counts": []}
    lo, hi = min(xs), max(xs)
    if hi == lo:
        return {"edges": [lo, hi], "counts": [len(xs)]}
    width = (hi - lo) / bins
    counts = [0] * bins
    for x in xs:
        counts[min(bins - 1, int((x - lo) / width))] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


def advantage_shares(groups: list[dict[str, Any]], names: list[str], weights: list[float]) -> dict[str, float] | None:
    """Each layer's share of the variance of GRPO's (unscaled) advantages.

    With a_l = w_l (r_l - group mean of r_l) and a = sum_l a_l, the shares
    sum_i a_l,i a_i / sum_i a_i^2 add up to 1 (a layer can be negative: it pulls
    against the others). None when no group has any signal.

    >>> g = [{"layers": {"fmt": [1.0, 1.0], "ans": [0.0, 5.0]}}]
    >>> advantage_shares(g, ["fmt", "ans"], [1.0, 1.0])
    {'fmt': 0.0, 'ans': 1.0}
    """
    cross = {n: 0.0 for n in names}
    total_sq = 0.0
    for g in groups:
        centred = {}
        for name, w in zip(names, weights):
            values = [v or 0.0 for v in g["layers"][name]]
            m = _mean(values)
            centred[name] = [w * (v - m) for v in values]
        totals = [sum(centred[n][i] for n in names) for i in range(len(next(iter(centred.values()))))]
        total_sq += sum(a * a for a in totals)
        for n in names:
            cross[n] += sum(x * a for x, a in zip(centred[n], totals))
    if total_sq == 0:
        return None
    return {n: round(cross[n] / total_sq, 4) for n in names}


def analyse(groups: list[dict[str, Any]], funcs: list[Any], weights: list[float], max_len: int) -> dict[str, Any]:
    """The statistics of scored groups (see the module docstring); each layer's ``kind`` is the
    one its reward declares (:func:`aha.rewards.reward_kind`)."""
    from aha.rewards import reward_kind

    names = [f.__name__ for f in funcs]
    flat = lambda key: [x for g in groups for x in g[key]]  # noqa: E731
    k = len(groups[0]["passed"])
    layers = {}
    for name, fn in zip(names, funcs):
        values = [v for g in groups for v in g["layers"][name] if v is not None]
        layers[name] = {"kind": reward_kind(fn), "mean": _mean(values), "std": _std(values),
                        "min": min(values, default=None), "max": max(values, default=None),
                        "none_share": 1 - len(values) / (len(groups) * k), "histogram": _histogram(values)}
    totals = flat("total")
    finished = [n for g in groups for n, t in zip(g["lengths"], g["truncated"]) if not t]
    pass_rates = [sum(g["passed"]) / k for g in groups]
    return {
        "prompts": len(groups), "completions": len(totals), "group_size": k, "max_completion_length": max_len,
        "total": {"mean": _mean(totals), "std": _std(totals), "histogram": _histogram(totals)},
        "layers": layers,
        "flat_group_share": sum(1 for g in groups if max(g["total"]) - min(g["total"]) < 1e-9) / len(groups),
        "truncation_rate": _mean([float(t) for t in flat("truncated")]),
        "looping_share": (sum(flat("loops")) / max(1, sum(flat("truncated")))) if groups and "loops" in groups[0]
        else 0.0,
        "eos_rate": len(finished) / len(totals),
        "finished_length": {"p50": quantile(finished, 0.5), "p90": quantile(finished, 0.9),
                            "max": max(finished, default=None)},
        "format_rate": _mean([float(x) for x in flat("format_ok")]),
        "rewrites_prefill_rate": _mean([float(x) for x in flat("rewrites_prefill")]),
        "pass@1": _mean(pass_rates),
        f"pass@{k}": _mean([pass_at_k(k, sum(g["passed"]), k) for g in groups]),
        "pass_rate_histogram": [sum(1 for g in groups if sum(g["passed"]) == c) for c in range(k + 1)],
        "never_right": sum(1 for r in pass_rates if r == 0), "always_right": sum(1 for r in pass_rates if r == 1),
        "mixed": sum(1 for r in pass_rates if 0 < r < 1),
        "advantage_share": advantage_shares(groups, names, weights),
    }


# ----- verdicts -------------------------------------------------------------------------------------------
def _suggest_length(stats: dict[str, Any]) -> int:
    """A length the finished completions fit in: 10% over the longest; when even the finished
    ones crowd the limit (the limit censors them), half again the limit."""
    limit = stats["max_completion_length"]
    longest = stats["finished_length"]["max"]
    need = 1.5 * limit if longest is None or longest >= 0.9 * limit else 1.1 * longest
    return 16 * math.ceil(max(need, limit + 16) / 16)


def verdicts(stats: dict[str, Any], recipe: Recipe, fmt: Format) -> list[dict[str, str]]:
    """Findings in plain words, each with its fix; ``fatal`` ones stop the run before GRPO."""
    out: list[dict[str, str]] = []

    def say(level: str, code: str, message: str) -> None:
        out.append({"level": level, "code": code, "message": message})

    k, max_len = stats["group_size"], stats["max_completion_length"]
    trunc, fl = stats["truncation_rate"], stats["finished_length"]
    if trunc > 0.2 and stats.get("looping_share", 0.0) >= 0.5:
        say("warn", "truncated-loops", f"{trunc:.0%} of completions stop at {max_len} tokens, but "
            f"{stats['looping_share']:.0%} of those repeat themselves (loops): a longer limit would not finish them. "
            "GRPO's format and answer rewards teach the model to stop; if truncation stays high, add a "
            "repetition_penalty reward layer")
    elif trunc > 0.2:
        level = "fatal" if trunc > recipe.grpo.warn_truncated_ratio else "warn"
        need = (f"finished ones need up to {fl['max']} (median {fl['p50']:g})" if fl["max"] is not None
                else "none finished")
        if fl["max"] is not None and fl["max"] >= 0.9 * max_len:
            need += ", and the limit cuts the longer ones short"
        say(level, "truncated", f"{trunc:.0%} of completions stop at {max_len} tokens; {need}: "
            f"set grpo.max_completion_length >= {_suggest_length(stats)}")
    format_layers = [n for n, s in stats["layers"].items() if s["kind"] == "format"]
    for name in format_layers:
        s = stats["layers"][name]
        # Constant and followed everywhere is fine (the warmup did its job); constant and never followed is not.
        if s["max"] is not None and s["max"] == s["min"] and stats["format_rate"] < 0.5:
            why = (f"the prompt pre-fills {fmt.prefill.strip()!r} but {stats['rewrites_prefill_rate']:.0%} of "
                   "completions write it again" if stats["rewrites_prefill_rate"] > 0.5 else
                   f"no completion varies on it (format followed by {stats['format_rate']:.0%})")
            say("fatal", "format-constant", f"{name} is {s['max']:g} on every completion: {why}. Check a sample with "
                "`aha rewards explain`, train the tags first (sft.enabled), or fix the format")
    p1 = stats["pass@1"]
    if stats["flat_group_share"] >= 0.8:
        reason = (f"the problems are too easy for this model (pass@1 {p1:.2f})" if p1 >= 0.9 else
                  f"the problems are too hard for this model (pass@1 {p1:.2f})" if p1 <= 0.05 else
                  "the rewards do not vary within groups")
        say("fatal", "flat", f"{stats['flat_group_share']:.0%} of groups have equal rewards, so GRPO gets no "
            f"signal from them: {reason}; pick another difficulty (data.level, data.task) or grpo.select: learnable")
    elif stats["flat_group_share"] >= 0.5:
        say("warn", "flat", f"{stats['flat_group_share']:.0%} of groups have equal rewards (no signal); "
            "grpo.select: learnable trains only on prompts that carry one")
    if stats["mixed"] == 0:
        say("fatal", "no-learnable", f"no prompt is sometimes right and sometimes wrong ({stats['never_right']} never, "
            f"{stats['always_right']} always right in {k} samples): the answer reward gives GRPO nothing to learn")
    shares = stats["advantage_share"] or {}
    answer_share = sum(v for n, v in shares.items() if stats["layers"][n]["kind"] == "answer")
    format_share = sum(v for n, v in shares.items() if stats["layers"][n]["kind"] == "format")
    if shares and answer_share < 0.25 and format_share > 0.5:
        say("warn", "answer-drowned", f"format layers make {format_share:.0%} of the advantage variance and answer "
            f"layers {answer_share:.0%}: GRPO mostly learns the layout; lower the format weights or warm up longer")
    headroom = stats[f"pass@{k}"] - p1
    say("info", "headroom", f"pass@1 {p1:.2f}, pass@{k} {stats[f'pass@{k}']:.2f}: at most {headroom:.2f} of pass@1 to "
        f"gain by sharpening; {stats['mixed']} of {stats['prompts']} prompts are learnable (pass rate strictly "
        f"between 0 and 1)")
    return out


# ----- the stage --------------------------------------------------------------------------------------------
def run_preflight(recipe: Recipe, fmt: Format, generator: Any, rows: list[dict[str, Any]], max_len: int,
                  funcs: list[Any], weights: list[float], out_dir: Path, chunk: int = 16) -> dict[str, Any]:
    """Score ``grpo.preflight_prompts`` of ``rows`` (and, with ``select: learnable``, more until
    GRPO has enough learnable prompts); write preflight.json, selected.json and a PNG."""
    g = recipe.grpo
    sampling = grpo_sampling(recipe, max_len)
    needed = prompts_needed(recipe) or len(rows)
    learnable_mode = g.select == "learnable"
    cap = min(len(rows), g.select_max_prompts or 4 * needed) if learnable_mode else min(len(rows), g.preflight_prompts)
    groups: list[dict[str, Any]] = []
    pos = 0
    while pos < cap:
        stats_done = len(groups) >= g.preflight_prompts
        learnable = sum(1 for x in groups if 0 < sum(x["passed"]) < len(x["passed"]))
        if stats_done and (not learnable_mode or learnable >= needed):
            break
        part = rows[pos : min(cap, pos + chunk)]
        pos += len(part)
        gens = generator.generate([r["prompt"] for r in part], sampling)
        for row, group in zip(part, gens):
            groups.append(score_group(funcs, weights, fmt, row, [x.text for x in group], [x.truncated for x in group],
                                      [x.num_tokens for x in group]))
        log.info("preflight: %d prompts scored (%d learnable)", len(groups),
                 sum(1 for x in groups if 0 < sum(x["passed"]) < len(x["passed"])))
    stats = analyse(groups, funcs, weights, max_len)
    found = verdicts(stats, recipe, fmt)
    selected = [x["id"] for x in groups if 0 < sum(x["passed"]) < len(x["passed"])] if learnable_mode else None
    selection = None
    if learnable_mode:
        selection = {"scored": len(groups), "kept": len(selected), "needed": needed,
                     "dropped_never_right": stats["never_right"], "dropped_always_right": stats["always_right"],
                     "candidates": len(rows)}
        if 0 < len(selected) < needed:
            found.append({"level": "warn", "code": "few-learnable",
                          "message": f"{len(selected)} learnable prompts for the {needed} that {g.args.max_steps} "
                                     f"steps use: each is seen about {needed / len(selected):.1f} times"})
    found = accept(found, g.preflight_accept)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"stats": stats, "verdicts": found, "selection": selection, "sampling": vars(sampling),
              "per_prompt": [{"id": x["id"], "pass_rate": sum(x["passed"]) / len(x["passed"]),
                              "total_mean": _mean(x["total"])} for x in groups]}
    write_json(out_dir / PREFLIGHT_FILE, report)
    if selected is not None:
        write_json(out_dir / SELECTED_FILE, selected)
    plot_preflight(report, out_dir / "preflight.png")
    for v in found:
        (log.warning if v["level"] in ("warn", "fatal") else log.info)("preflight %s: %s", v["level"], v["message"])
    if selection:
        log.info("preflight: scored %d prompts, kept %d learnable (dropped %d never right, %d always right); "
                 "GRPO needs %d", selection["scored"], selection["kept"], selection["dropped_never_right"],
                 selection["dropped_always_right"], needed)
    return report


def accept(found: list[dict[str, str]], accepted: dict[str, str]) -> list[dict[str, str]]:
    """Findings the recipe accepts knowingly (``grpo.preflight_accept``: code -> the reason,
    written in the recipe) are reported as accepted, with that reason, and stop nothing.

    >>> accept([{"level": "warn", "code": "few-learnable", "message": "9 for 20"}], {"few-learnable": "seen twice"})
    [{'level': 'accepted', 'code': 'few-learnable', 'message': '9 for 20 (accepted by the recipe: seen twice)'}]
    """
    return [{**v, "level": "accepted", "message": f"{v['message']} (accepted by the recipe: {accepted[v['code']]})"}
            if v["code"] in accepted and v["level"] != "info" else v for v in found]


def check_verdicts(report: dict[str, Any], mode: str, where: Path) -> None:
    """Stop before GRPO on a fatal finding, unless the recipe says ``grpo.preflight: warn``."""
    fatal = [v for v in report["verdicts"] if v["level"] == "fatal"]
    if fatal and mode == "stop":
        raise RecipeError(f"preflight: {fatal[0]['message']} ({len(fatal)} fatal finding(s) in {where}; "
                          "grpo.preflight: warn runs GRPO anyway)")


def plot_preflight(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = report["stats"]
    layers = list(stats["layers"].items()) + [("total (weighted)", stats["total"])]
    fig, axes = plt.subplots(1, 1 + len(layers), figsize=(3.0 * (1 + len(layers)), 2.8))
    counts = stats["pass_rate_histogram"]
    k = len(counts) - 1
    axes[0].bar(range(k + 1), counts, color="#2f6fde")
    axes[0].set_xticks(range(k + 1))
    axes[0].set_xlabel(f"right answers of {k}")
    axes[0].set_ylabel("prompts")
    axes[0].set_title("per-prompt pass rate", fontsize=9)
    for ax, (name, s) in zip(axes[1:], layers):
        h = s["histogram"]
        if h["counts"]:
            edges = h["edges"]
            centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])] or edges[:1]
            width = (edges[-1] - edges[0]) / max(1, len(h["counts"])) or 1.0
            ax.bar(centres, h["counts"], width=width * 0.9, color="#9aa5b1")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("reward")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def to_markdown(report: dict[str, Any]) -> list[str]:
    s = report["stats"]
    k = s["group_size"]
    lines = [f"On {s['prompts']} training prompts x {k} samples, sampled exactly as GRPO samples "
             f"(temperature {report['sampling']['temperature']}, top_p {report['sampling']['top_p']}, "
             f"min_p {report['sampling']['min_p']}, {s['max_completion_length']} tokens):", "",
             "| measure | value |", "|---|---|",
             f"| pass@1 / pass@{k} (format + right) | {s['pass@1']:.2f} / {s[f'pass@{k}']:.2f} |",
             f"| prompts never / sometimes / always right | {s['never_right']} / {s['mixed']} / {s['always_right']} |",
             f"| groups with equal rewards (no signal) | {s['flat_group_share']:.0%} |",
             f"| truncated / finished with EOS | {s['truncation_rate']:.0%} / {s['eos_rate']:.0%} |",
             f"| finished length p50 / p90 / max | {_num(s['finished_length']['p50'])} / "
             f"{_num(s['finished_length']['p90'])} / "
             f"{s['finished_length']['max']} |",
             f"| format followed | {s['format_rate']:.0%} |", "",
             "| layer | kind | mean | std | share of advantage variance |", "|---|---|---|---|---|"]
    shares = s["advantage_share"] or {}
    for name, layer in s["layers"].items():
        share = f"{shares[name]:.0%}" if name in shares else "-"
        lines.append(f"| {name} | {layer['kind']} | {layer['mean']:.2f} | {layer['std']:.2f} | {share} |")
    lines.append(f"| total (weighted) | | {s['total']['mean']:.2f} | {s['total']['std']:.2f} | |")
    sel = report.get("selection")
    if sel:
        lines += ["", f"Selection (`grpo.select: learnable`): scored {sel['scored']} of {sel['candidates']} candidate "
                  f"prompts, kept {sel['kept']} (dropped {sel['dropped_never_right']} never right and "
                  f"{sel['dropped_always_right']} always right); GRPO uses {sel['needed']}."]
    if report["verdicts"]:
        lines += [""] + [f"- **{v['level']}** ({v['code']}): {v['message']}" for v in report["verdicts"]]
    lines += ["", "![preflight](preflight/preflight.png)"]
    return lines


def selected_rows(rows: list[dict[str, Any]], folder: Path | None) -> list[dict[str, Any]]:
    """GRPO's prompts: all of them, or (``select: learnable``) those the preflight kept."""
    if folder is None:
        return rows
    path = folder / SELECTED_FILE
    if not path.is_file():
        raise RecipeError(f"grpo.select: learnable, but the preflight left no {path}; re-run to redo the preflight")
    keep = set(read_json(path, kind=list))
    chosen = [r for r in rows if r["id"] in keep]
    if not chosen:
        raise RecipeError("grpo.select: learnable kept no prompt (none was sometimes right and sometimes wrong); "
                          "see the preflight report, or set grpo.select: all")
    log.info("grpo: training on the %d learnable prompts the preflight kept (of %d)", len(chosen), len(rows))
    return chosen
