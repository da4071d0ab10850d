"""Faithful mode equals the published recipes, value for value.

``spec_*`` below transcribe the published recipes' rules (docs/SOURCES.md) literally
(regexes included); the package computes the same values with linear-time code.
"""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aha.rewards import published_rewards

EOS = "<|endoftext|>"
R_END, S_START, S_END = "<end_working_out>", "<SOLUTION>", "</SOLUTION>"
SPEC_ANSWER = re.compile(
    re.escape(R_END) + r".*?" + re.escape(S_START) + r"(.+?)" + re.escape(S_END)
    + r"[\s]{0,}(?:" + re.escape(EOS) + r")?[\s]{0,}$",
    flags=re.MULTILINE | re.DOTALL,
)
SPEC_NUMBER = re.compile(re.escape(S_START) + r".*?[\s]{0,}(-?[\d\.\,]{1,})", flags=re.MULTILINE | re.DOTALL)


def spec_exact(text):
    return 3.0 if SPEC_ANSWER.search(text) is not None else 0.0


def spec_approx(text):
    return sum(0.5 if text.count(t) == 1 else -1.0 for t in (R_END, S_START, S_END))


def spec_check_answer(text, gold):
    m = SPEC_ANSWER.search(text)
    if m is None:
        return -2.0
    guess = m.group(1)
    if guess == gold:
        return 5.0
    if guess.strip() == gold.strip():
        return 3.5
    try:
        ratio = float(guess) / float(gold)
        if 0.9 <= ratio <= 1.1:
            return 2.0
        if 0.8 <= ratio <= 1.2:
            return 1.5
        return -2.5
    except Exception:
        return -4.5


def spec_check_numbers(text, gold):
    m = SPEC_NUMBER.search(text)
    if m is None:
        return -2.5
    try:
        return 3.5 if float(gold.strip()) == float(m.group(1).strip().replace(",", "")) else -1.5
    except Exception:
        return 0.0


def spec_xml_answer(text):
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def spec_xmlcount(text):
    c = 0.0
    if text.count("<reasoning>\n") == 1:
        c += 0.125
    if text.count("\n</reasoning>\n") == 1:
        c += 0.125
    if text.count("\n<answer>\n") == 1:
        c += 0.125
        c -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        c += 0.125
        c -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return c


def spec_xml_all(text, gold):
    return [
        spec_xmlcount(text),
        0.5 if re.match(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", text) else 0.0,
        0.5 if re.match(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", text) else 0.0,
        0.5 if spec_xml_answer(text).isdigit() else 0.0,
        2.0 if spec_xml_answer(text) == gold else 0.0,
    ]


UNSLOTH = published_rewards("unsloth", eos_token=EOS)
XML = published_rewards("xml")


def unsloth_scores(text, gold):
    return [fn([text], answer=[gold])[0] for fn in UNSLOTH]


# Hand-worked: (completion, gold, [exact, approx, check_answer, check_numbers])
UNSLOTH_CASES = [
    ("I add 17+17.<end_working_out><SOLUTION>34</SOLUTION>", "34", [3.0, 1.5, 5.0, 3.5]),
    ("x<end_working_out><SOLUTION>34</SOLUTION>" + EOS, "34", [3.0, 1.5, 5.0, 3.5]),
    ("x<end_working_out><SOLUTION> 34 </SOLUTION>", "34", [3.0, 1.5, 3.5, 3.5]),
    ("x<end_working_out><SOLUTION>36</SOLUTION>", "34", [3.0, 1.5, 2.0, -1.5]),  # ratio 1.059
    ("x<end_working_out><SOLUTION>40</SOLUTION>", "34", [3.0, 1.5, 1.5, -1.5]),  # ratio 1.176
    ("x<end_working_out><SOLUTION>90</SOLUTION>", "34", [3.0, 1.5, -2.5, -1.5]),
    ("x<end_working_out><SOLUTION>thirty</SOLUTION>", "34", [3.0, 1.5, -4.5, -2.5]),
    ("x<end_working_out><SOLUTION>1,000</SOLUTION>", "1000", [3.0, 1.5, -4.5, 3.5]),  # float('1,000') fails
    ("x<end_working_out><SOLUTION>5</SOLUTION>", "0", [3.0, 1.5, -4.5, -1.5]),  # division by zero
    ("x<end_working_out><SOLUTION>34</SOLUTION>\ntrailing", "34", [3.0, 1.5, 5.0, 3.5]),  # MULTILINE $ quirk
    ("x<end_working_out><SOLUTION>34</SOLUTION> trailing", "34", [0.0, 1.5, -2.0, 3.5]),
    ("<SOLUTION>34</SOLUTION>", "34", [0.0, 0.0, -2.0, 3.5]),
    ("x<end_working_out>", "34", [0.0, -1.5, -2.0, -2.5]),
    ("", "34", [0.0, -3.0, -2.0, -2.5]),
    # repeated tags: the lazy group runs on to the last closing tag, "3</SOLUTION><SOLUTION>4"
    ("a<end_working_out>b<end_working_out><SOLUTION>3</SOLUTION><SOLUTION>4</SOLUTION>", "3", [3.0, -3.0, -4.5, 3.5]),
    ("x<end_working_out><SOLUTION>$-5.5</SOLUTION>", "-5.5", [3.0, 1.5, -4.5, 3.5]),
]


@pytest.mark.parametrize("text,gold,expected", UNSLOTH_CASES)
def test_unsloth_hand_worked(text, gold, expected):
    assert unsloth_scores(text, gold) == expected
    assert [spec_exact(text), spec_approx(text), spec_check_answer(text, gold), spec_check_numbers(text, gold)] == expected


XML_CASES = [
    # one-line reasoning: strict passes; soft never does on the prompted layout ('.' stops at newlines)
    ("<reasoning>\n9*8=72\n</reasoning>\n<answer>\n72\n</answer>\n", "72", [0.5, 0.0, 0.5, 0.5, 2.0]),
    ("<reasoning>r</reasoning><answer>72</answer>", "72", [0.0, 0.5, 0.0, 0.5, 2.0]),
    # multi-line reasoning: strict and soft fail (the missing-DOTALL bug)
    ("<reasoning>\nstep 1\nstep 2\n</reasoning>\n<answer>\n72\n</answer>\n", "72", [0.5, 0.0, 0.0, 0.5, 2.0]),
    # trailing text is penalised per character
    ("<reasoning>\nr\n</reasoning>\n<answer>\n72\n</answer>\nbye", "72", [0.5 - 0.003 - 0.003, 0.0, 0.0, 0.5, 2.0]),
    # no tags: the whole text is the extracted answer
    ("72", "72", [0.0, 0.0, 0.0, 0.5, 2.0]),
    ("<reasoning>\nr\n</reasoning>\n<answer>\n$72\n</answer>\n", "72", [0.5, 0.0, 0.5, 0.0, 0.0]),
    ("<reasoning>\nr\n</reasoning>\n<answer>\n-3\n</answer>\n", "-3", [0.5, 0.0, 0.5, 0.0, 2.0]),
    # xml_count's quirks, worked by hand from the recipe's rule (not from any code):
    # no newline after </answer>: "\n</answer>\n" never occurs, so the first penalty counts the WHOLE text
    # (48 characters: -0.048) and the second is (0 - 1) x 0.001 = +0.001; 0.5 - 0.048 + 0.001 = 0.453
    ("<reasoning>\nr\n</reasoning>\n<answer>\n72\n</answer>", "72", [0.453, 0.0, 0.0, 0.5, 2.0]),
    # a repeated opening tag earns nothing for it: 3 x 0.125
    ("<reasoning>\n<reasoning>\nr\n</reasoning>\n<answer>\n72\n</answer>\n", "72", [0.375, 0.0, 0.0, 0.5, 2.0]),
]


@pytest.mark.parametrize("text,gold,expected", XML_CASES)
def test_xml_hand_worked(text, gold, expected):
    ours = [fn([text], answer=[gold])[0] for fn in XML]
    assert ours == pytest.approx(expected)
    assert spec_xml_all(text, gold) == pytest.approx(expected)


def test_published_names_and_order():
    assert [f.__name__ for f in UNSLOTH] == ["match_format_exactly", "match_format_approximately", "check_answer", "check_numbers"]
    assert [f.__name__ for f in XML] == [
        "xmlcount_reward_func", "soft_format_reward_func", "strict_format_reward_func", "int_reward_func", "correctness_reward_func"]


def test_gold_from_gsm8k_column():
    # The XML recipe extracts the gold after '####' before scoring; so do we.
    text = "<reasoning>\nr\n</reasoning>\n<answer>\n72\n</answer>\n"
    assert XML[-1]([text], answer=["48 + 24 = <<48+24=72>>72\n#### 72"]) == [2.0]


# Random strings built from the pieces the regexes care about.
PIECES = [R_END, S_START, S_END, EOS, "<reasoning>", "</reasoning>", "<answer>", "</answer>",
          "\n", " ", "\t", "34", "-", ".", ",", "1,000", "x", "3.5", "é", "\u2028", "\x0b"]
texts = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)
golds = st.sampled_from(["34", " 34", "1000", "0", "3.5", "-5", "abc", ""])


@settings(max_examples=1500, deadline=None)
@given(texts, golds)
def test_unsloth_faithful_equals_spec_on_random_text(text, gold):
    assert unsloth_scores(text, gold) == [
        spec_exact(text), spec_approx(text), spec_check_answer(text, gold), spec_check_numbers(text, gold)]


@settings(max_examples=1000, deadline=None)
@given(texts, golds)
def test_xml_faithful_equals_spec_on_random_text(text, gold):
    assert [fn([text], answer=[gold])[0] for fn in XML] == pytest.approx(spec_xml_all(text, gold))


# ----- DAPO-Math as verl grades it ------------------------------------------------------------------------
def _verl_table():
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "data" / "dapo_verl_parity.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("raw,expected", _verl_table()["normalize"])
def test_minerva_normalize_equals_verl(raw, expected):
    from aha.rewards.faithful import minerva_normalize

    assert minerva_normalize(raw) == expected


@pytest.mark.parametrize("text,gold,expected", _verl_table()["score"])
def test_faithful_dapo_reward_equals_verl(text, gold, expected):
    from aha.rewards import check_dapo_answer

    assert check_dapo_answer([text], answer=[gold], mode="faithful") == [expected]


def test_default_dapo_reward_differs_from_verl_where_models_write_units():
    """Default mode is aha's more forgiving reader: it accepts what verl refuses here."""
    from aha.rewards import check_dapo_answer

    texts = ["Answer: 10\\%", "Answer: 57\\,500", "Answer: 0.50"]
    golds = ["10", "57500", "1/2"]
    assert check_dapo_answer(texts, answer=golds) == [1.0, 1.0, 1.0]
    assert check_dapo_answer(texts, answer=golds, mode="faithful") == [-1.0, -1.0, -1.0]
