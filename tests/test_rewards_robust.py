"""A reward must never take a training run down: any input gives floats or None, fast."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aha.formats import FORMATS
from aha.rewards import LAYERS, get_reward

TAGS_ONLY = {"format_exact", "format_approximate", "check_answer_numeric", "check_number"}


def all_rewards():
    for name in LAYERS:
        for fmt in FORMATS:
            for mode in ("default", "faithful"):
                if mode == "faithful" and name in TAGS_ONLY and FORMATS[fmt].answer_style != "tags":
                    continue
                yield get_reward(name, format=fmt, mode=mode)


REWARDS = list(all_rewards())
PIECES = ["<start_working_out>", "<end_working_out>", "<SOLUTION>", "</SOLUTION>", "<reasoning>", "</reasoning>",
          "<answer>", "</answer>", "<think>", "</think>", "\\boxed{", "}", "{", "Answer:", "####", "$", ",", ".",
          "-", "/", "%", "\n", " ", "1", "34", "1,000", "0", "\\frac{1}{2}", "é", "\x00", "🙂", "<|endoftext|>"]
tagged_text = st.lists(st.sampled_from(PIECES), max_size=25).map("".join)
anything = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.text(max_size=200), tagged_text,
    st.binary(max_size=20), st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": tagged_text}), max_size=2),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(anything, max_size=4), st.one_of(st.none(), st.lists(anything, max_size=4), anything))
def test_never_raises_and_returns_float_or_none(completions, golds):
    for fn in REWARDS:
        out = fn(completions, answer=golds, completion_ids=golds)
        assert len(out) == len(completions), fn.__name__
        assert all(v is None or isinstance(v, float) for v in out), (fn.__name__, out)


def test_odd_batches():
    for fn in REWARDS:
        assert fn(None) == []
        assert fn([]) == []
        assert len(fn("one bare string", answer="1")) == 1


def test_missing_or_bad_gold_gives_none():
    # The numeric layers need a numeric gold; math-verify reads most text as an
    # expression, so only what its parser rejects counts as unparseable there.
    for name, bad_gold in (("check_answer_numeric", "not a number"), ("check_number", "not a number"),
                           ("check_math_verify", "}{")):
        fn = get_reward(name, format="unsloth")
        text = "x<end_working_out><SOLUTION>3</SOLUTION>"
        assert fn([text]) == [None], name
        assert fn([text], answer=[None]) == [None], name
        assert fn([text], answer=[bad_gold]) == [None], name
        assert fn([text, text], answer=["3"]) == [fn([text], answer=["3"])[0], None], name


ADVERSARIAL = {
    "repeated unsloth tags": "<end_working_out><SOLUTION>" * 4000,
    "repeated closing tags": "x<end_working_out><SOLUTION>" + "1</SOLUTION> " * 8000,
    "whitespace after close": "x<end_working_out><SOLUTION>1</SOLUTION>" + " " * 100_000 + "x",
    "repeated xml soft": "<reasoning>" + "</reasoning><answer>" * 5000,
    "xml lines": "<reasoning>\n" + "a\n</reasoning>\n<answer>\n" * 4000,
    "nested braces": "\\boxed{" * 20_000 + "}" * 20_000,
    "unclosed boxes": "\\boxed{" * 30_000,
    "answer lines": "Answer: 1\n" * 10_000,
    "digits": "<SOLUTION>" + "1," * 50_000,
    "think blocks": "<think></think>" * 7000,
}


@pytest.mark.parametrize("label", list(ADVERSARIAL))
def test_bounded_time_on_100kb(label):
    text = ADVERSARIAL[label][:100_000]
    slowest = (0.0, "")
    for fn in REWARDS:
        best = min(_timed(fn, text) for _ in range(3))
        slowest = max(slowest, (best, fn.__name__))
    assert slowest[0] < 0.020, f"{slowest[1]} took {slowest[0] * 1000:.1f} ms on {label}"


def _timed(fn, text):
    """The CPU time one call takes (the layer's own cost: other processes on the machine do not count)."""
    start = time.process_time()
    fn([text], answer=["34"])
    return time.process_time() - start


def test_one_megabyte_completion():
    text = "step " * 200_000 + "<end_working_out><SOLUTION>34</SOLUTION>"
    for fn in REWARDS:
        out = fn([text], answer=["34"])
        assert len(out) == 1


# ----- errors are counted, not swallowed -----------------------------------------------------------------
def _format_that_breaks():
    """The unsloth format with an answer reader that raises on one marker: how a bug in a
    layer (or a format a user wrote) shows up during training."""
    import dataclasses

    from aha.formats import Format, get_format

    class Broken(Format):
        def extract_answer(self, text):
            if "boom" in str(text):
                raise RuntimeError("a bug in the answer reader")
            return super().extract_answer(text)

    return Broken(**{f.name: getattr(get_format("unsloth"), f.name) for f in dataclasses.fields(Format)})


def test_a_layer_that_raises_is_counted_and_its_traceback_logged_once(caplog):
    import logging
    import pickle

    fn = get_reward("check_answer_numeric", format=_format_that_breaks())
    ok, bad = "x<end_working_out><SOLUTION>34</SOLUTION>", "x<end_working_out><SOLUTION>boom</SOLUTION>"
    with caplog.at_level(logging.WARNING, logger="aha"):
        assert fn([ok, bad, bad], answer=["34"] * 3) == [5.0, None, None]
        fn([bad], answer=["34"])
    assert fn.errors == 3
    tracebacks = [r for r in caplog.records if "First traceback" in r.getMessage()]
    assert len(tracebacks) <= 1 and all("a bug in the answer reader" in r.getMessage() for r in tracebacks)
    assert any("raised on every completion of a batch" in r.getMessage() for r in caplog.records)
    assert pickle.loads(pickle.dumps(get_reward("format_exact")))(["<end_working_out><SOLUTION>1</SOLUTION>"]) == [3.0]


def test_rewards_scoring_at_once_keep_their_own_error_counts():
    """Each Reward counts only the completions its own layer raised on, also when several
    rewards score at the same moment in different threads (TRL may score in threads)."""
    from concurrent.futures import ThreadPoolExecutor

    broken = _format_that_breaks()
    failing = get_reward("check_answer_numeric", format=broken)
    healthy = get_reward("check_number", format="unsloth")
    bad = ["x<end_working_out><SOLUTION>boom</SOLUTION>"] * 7
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(f, bad, answer=["4"] * 7) for _ in range(20) for f in (failing, healthy)]
        for job in jobs:
            job.result()
    assert failing.errors == 20 * 7 and healthy.errors == 0


def test_reward_watch_reports_reward_errors(caplog):
    import logging
    from types import SimpleNamespace

    from aha.recipes import load_recipe
    from aha.recipes.training.trainers import RewardWatch

    fn = get_reward("check_answer_numeric", format=_format_that_breaks())
    watch = RewardWatch(load_recipe("tiny-qwen3-smoke"), [fn, get_reward("format_exact")], max_completion_length=8)
    with caplog.at_level(logging.WARNING, logger="aha"):
        watch.on_log(None, SimpleNamespace(global_step=1), None, logs={})
        assert not any("has raised" in r.getMessage() for r in caplog.records)
        fn(["<SOLUTION>boom</SOLUTION>", "<SOLUTION>4</SOLUTION>"], answer=["4", "4"])
        watch.on_log(None, SimpleNamespace(global_step=2), None, logs={})
    assert watch.error_counts() == {"check_answer_numeric": 1}
    assert any("step 2: reward check_answer_numeric has raised on 1 completions" in r.getMessage() for r in caplog.records)
