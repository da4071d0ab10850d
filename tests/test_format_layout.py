"""One place decides whether a completion follows a format: Format.format_violation. The
format rewards, grading and `aha rewards explain` must agree with it on any completion."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aha.eval import grade
from aha.formats import FORMATS, get_format
from aha.rewards import explain, get_reward

PIECES = ["<start_working_out>", "<end_working_out>", "<SOLUTION>", "</SOLUTION>", "<reasoning>", "</reasoning>",
          "<answer>", "</answer>", "<think>", "</think>", "\\boxed{", "}", "Answer:", "Answer: 7", "\n", " ", "  \n",
          "Sure!", "12", "34", "x", "<|endoftext|>", "<|im_end|>"]
pieces = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


def well_formed(fmt):
    """Completions built from the format's own template: mostly compliant, with small edits."""
    reasoning = st.sampled_from(["r", "line 1\nline 2", "17 + 17 = 34", ""])
    answer = st.sampled_from(["34", "7", " 12 ", ""])
    edit = st.sampled_from(["", "Sure!\n", "\n", "<|im_end|>", " trailing", "\n\n"])
    return st.tuples(reasoning, answer, edit, edit).map(
        lambda t: t[2] + fmt.render_completion(t[0], t[1]) + t[3])


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_check_format_rewards_grading_and_explain_agree(name, data):
    fmt = get_format(name)
    text = data.draw(st.one_of(pieces, well_formed(fmt)))
    why = fmt.format_violation(text)
    assert fmt.check_format(text) == (why is None)
    assert grade(text, "34", fmt)["format_ok"] == (why is None)
    exact = dict((r["layer"], r) for r in explain(text, answer="34", format=name, all_layers=True))
    if "format_exact" in exact:
        assert exact["format_exact"]["why"] == (why or "ok")
        assert (exact["format_exact"]["score"] > 0) == (why is None)
    if why is None:  # strict compliance implies the looser layouts and a readable answer
        assert fmt.extract_answer(text) is not None
        if fmt.answer_style == "tags" and fmt.reasoning_end:
            assert fmt.format_violation(text, "soft") is None


@pytest.mark.parametrize("level,layer", [("template", "xml_strict_format"), ("soft", "xml_soft_format")])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_xml_layout_rewards_are_the_same_check(level, layer, data):
    fmt = get_format("xml")
    text = data.draw(st.one_of(pieces, well_formed(fmt)))
    why = fmt.format_violation(text, level)
    assert (get_reward(layer, format="xml")([text])[0] > 0) == (why is None)
    row = next(r for r in explain(text, format="xml", all_layers=True) if r["layer"] == layer)
    assert row["why"] == (why or "ok")


@pytest.mark.parametrize("text,why", [
    ("Sure!\n<reasoning>\nr\n</reasoning>\n<answer>\n4\n</answer>", "text before <reasoning>: 'Sure!'"),
    ("<reasoning>r</reasoning>\n<answer>4</answer> ok", "text after </answer>: 'ok'"),
    ("<reasoning>r</reasoning> so <answer>4</answer>", "text between </reasoning> and <answer>: 'so'"),
    ("<reasoning>r</reasoning><answer> </answer>", "empty answer"),
    ("<answer>4</answer><reasoning>r</reasoning>", "tags out of order: <answer> < </answer> < <reasoning> < </reasoning>"),
    ("<reasoning>r</reasoning><answer>4</answer><answer>4</answer>", "<answer> appears 2 times"),
    ("", "empty completion"),
])
def test_each_violation_is_named(text, why):
    assert get_format("xml").format_violation(text) == why


def test_the_reported_disagreement_is_gone():
    """Issue 10: check_format said no, explain said "empty answer", extract_answer read 4."""
    text = "Sure!\n<reasoning>\nr\n</reasoning>\n<answer>\n4\n</answer>"
    fmt = get_format("xml")
    rows = {r["layer"]: r for r in explain(text, answer="4", format="xml", all_layers=True)}
    assert not fmt.check_format(text) and fmt.extract_answer(text) == "4"
    assert rows["format_exact"]["why"] == "text before <reasoning>: 'Sure!'"


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="strict, template or soft"):
        get_format("xml").format_violation("x", "loose")
