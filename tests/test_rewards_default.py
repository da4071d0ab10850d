"""What default mode fixes, and the registry's errors."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from aha.rewards import get_reward, math_equal, published_rewards, reward_names

MULTILINE_XML = "<reasoning>\nFirst 9*8.\nThat is 72.\n</reasoning>\n<answer>\n72\n</answer>\n<|im_end|>"


def test_multiline_xml_scores_in_default_mode():
    default = [f([MULTILINE_XML], answer=["72"])[0] for f in published_rewards("xml", mode="default")]
    faithful = [f([MULTILINE_XML], answer=["72"])[0] for f in published_rewards("xml", mode="faithful")]
    assert default == [0.5, 0.5, 0.5, 0.5, 2.0]  # the recipe's maximum, 4.0
    assert faithful[1:3] == [0.0, 0.0]  # the published bug: soft and strict format never fire


@pytest.mark.parametrize("answer,gold,expected", [
    ("34", "34", 5.0), ("$34", "34", 5.0), ("1,000", "1000", 5.0), ("\\boxed{34}", "34", 5.0),
    ("34.0", "34", 5.0), ("34.", "34", 5.0), ("36", "34", 2.0), ("40", "34", 1.5), ("0", "34", -2.5),
    ("seven", "34", -4.5), ("5", "0", -2.5),
])
def test_check_answer_numeric_default(answer, gold, expected):
    fn = get_reward("check_answer_numeric", format="unsloth")
    assert fn([f"w<end_working_out><SOLUTION>{answer}</SOLUTION><|endoftext|>"], answer=[gold]) == [expected]


def test_eos_and_conversational_completions():
    fn = get_reward("format_exact", format="unsloth")
    text = "w\nx<end_working_out><SOLUTION>3</SOLUTION><|endoftext|>"
    assert fn([text, [{"role": "assistant", "content": text}]]) == [3.0, 3.0]
    faithful = get_reward("format_exact", format="unsloth", mode="faithful")
    assert faithful([text]) == [0.0]  # the faithful regex needs the tokenizer's eos spelled out
    assert get_reward("format_exact", mode="faithful", eos_token="<|endoftext|>")([text]) == [3.0]


def test_think_and_dapo_layers():
    fn = get_reward("check_answer_exact", format="think")
    assert fn(["a\n</think>\nThus \\boxed{1,200}.", "\\boxed{5}"], answer=["1200", "6"]) == [2.0, 0.0]
    dapo = get_reward("check_dapo_answer", format="dapo")
    assert dapo(["so\nAnswer: 0.50", "Answer: \\frac{1}{2}"], answer=["\\frac12", "\\frac{1}{2}"]) == [1.0, 1.0]
    assert get_reward("check_dapo_answer", format="dapo", mode="faithful")(["Answer: 0.50"], answer=["\\frac12"]) == [-1.0]


def test_weights_carry_over_names():
    assert get_reward("check_number").__name__ == "check_number"
    assert get_reward("check_number", mode="faithful").__name__ == "check_numbers"
    assert "check_answer_numeric" in reward_names()


@pytest.mark.parametrize("call,message", [
    (lambda: get_reward("r3"), "unknown reward 'r3'"),
    (lambda: get_reward("format_exact", mode="strict"), "unknown reward mode"),
    (lambda: get_reward("format_exact", colour=1), "has no option"),
    (lambda: get_reward("format_exact", format="boxed", mode="faithful"), "needs a format with answer tags"),
    (lambda: get_reward("format_exact", format="nope"), "unknown format"),
    (lambda: published_rewards("open-r1"), "unknown published recipe"),
])
def test_registry_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


EQUIVALENT = [("0.5", "\\frac{1}{2}"), ("1,234", "1234"), ("50", "50\\%"), ("72", "\\boxed{72}"), ("18", "$18"),
              ("3", "3."), ("-3", "-3.0"), ("\\frac{2}{4}", "0.5"), ("\\sqrt{4}", "2")]
DIFFERENT = [("0.5", "0.4"), ("1234", "1,235"), ("3", "-3"), ("\\frac{1}{3}", "0.33"), ("72", "27")]


@pytest.mark.parametrize("gold,guess", EQUIVALENT)
def test_math_verify_equivalences(gold, guess):
    assert math_equal(gold, guess) is True


@pytest.mark.parametrize("gold,guess", DIFFERENT)
def test_math_verify_non_equivalences(gold, guess):
    assert math_equal(gold, guess) is False


def test_math_verify_in_threads_gives_main_thread_verdicts():
    pairs = EQUIVALENT + DIFFERENT
    expected = [math_equal(g, p) for g, p in pairs]
    errors = []

    def run(pair):
        try:
            return math_equal(*pair)
        except Exception as err:  # signal.alarm would raise here without our guard
            errors.append(err)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(run, pairs))
    assert not errors and got == expected
    assert expected == [True] * len(EQUIVALENT) + [False] * len(DIFFERENT)  # and the main thread's verdicts are right


# The forms models write inside a box or answer tag for gold 57500 / 18 (Qwen-style LaTeX included).
# Every default-mode answer layer and the evaluation's grading read them as the number.
WRITTEN_FORMS = [
    ("57500", r"\boxed{57{,}500}"), ("57500", r"57\,500"), ("57500", r"57\ 500"), ("57500", r"\$57,500"),
    ("57500", "57,500 dollars"), ("57500", r"\boxed{\$57{,}500.00}"), ("18", r"\boxed{18 \text{ dollars}}"),
    ("18", r"18\text{ dollars}"), ("18", r"\text{18 dollars}"), ("18", r"18 \mathrm{cm}^2"), ("18", r"x = 18"),
    ("18", r"18^\circ"), ("18", r"18^{\circ}"), ("18", "18 km per hour"), ("18", r"\textbf{18}"), ("18", "18."),
    ("0.5", r"\dfrac{1}{2}"), ("25", r"25\%"),
]


@pytest.mark.parametrize("gold, written", WRITTEN_FORMS)
def test_answers_as_models_write_them(gold, written):
    from aha.eval import grade
    from aha.rewards import check_answer_exact, check_answer_numeric, check_number

    completion = f"Working.<end_working_out><SOLUTION>{written}</SOLUTION>"
    verdict = grade(completion, gold, "unsloth")
    assert verdict["strict"] and verdict["lenient"], written
    assert check_answer_numeric([completion], answer=[gold]) == [5.0]
    assert check_number([completion], answer=[gold]) == [3.5]
    assert check_answer_exact([completion], format="unsloth", answer=[gold]) == [2.0]


@pytest.mark.parametrize("written", ["12 apples and 3 pears", "3 x 4", "about twelve", "2 and 3"])
def test_what_is_not_one_number_stays_unread(written):
    from aha.formats import parse_number

    assert parse_number(written) is None


HUGE = ["10^{10^{10}}", "(9^9)^(9^9)", "2^{2^{2^{2}}}", "9^{99999}", "(10^{99})^{99}", "123456!", "2**3**4"]


@pytest.mark.parametrize("answer", HUGE)
def test_huge_answers_get_a_quick_verdict_on_any_thread(answer):
    """sympy would take seconds to minutes on these (and off the main thread math-verify has
    no timeout at all): they are refused before the parser sees them."""
    import time

    from aha.eval import grade
    from aha.rewards import check_math_verify

    completion = f"<end_working_out><SOLUTION>{answer}</SOLUTION>"

    def score():
        started = time.perf_counter()
        verdicts = (check_math_verify([completion], answer=["7"]), math_equal("7", answer), math_equal(answer, "7"),
                    grade(completion, "7")["math_verify"])
        return time.perf_counter() - started, verdicts

    seconds, verdicts = score()
    assert seconds < 0.05 and verdicts == ([0.0], False, None, False)
    with ThreadPoolExecutor(1) as pool:
        seconds, threaded = pool.submit(score).result(timeout=5)
    assert seconds < 0.05 and threaded == verdicts


def test_small_powers_are_still_verified():
    assert math_equal("1024", "2^{10}") and math_equal("1944", "3^5 \\cdot 2^{3}")
