import pytest

from aha.formats import FORMATS, Format, format_from_dict, get_format, load_format, parse_number, register_format

ANSWERS = ["34", "-7", "1,234", "0.5", "\\frac{3}{4}"]


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("answer", ANSWERS)
def test_render_then_extract_round_trip(name, answer):
    fmt = get_format(name)
    reasoning = "First line.\nSecond line with 3 numbers: 1, 2, 3."
    completion = fmt.render_completion(reasoning, answer)
    assert fmt.render_response(reasoning, answer) == fmt.prefill + completion
    assert not completion.startswith(fmt.prefill) or not fmt.prefill
    assert fmt.check_format(completion), completion
    assert fmt.matches_template(completion)
    assert fmt.matches_template(completion + "<|im_end|>\n")
    assert parse_number(fmt.extract_answer(completion)) == parse_number(answer)


def test_unsloth_prefill_and_tags():
    fmt = get_format("unsloth")
    assert fmt.prefill == "<start_working_out>"
    assert fmt.generated_tags == ("<end_working_out>", "<SOLUTION>", "</SOLUTION>")
    # A model that repeats the prefilled tag still follows the format.
    assert fmt.check_format("<start_working_out>w<end_working_out><SOLUTION>1</SOLUTION>")


@pytest.mark.parametrize("text", [
    "w<end_working_out><SOLUTION>1</SOLUTION> and more",      # trailing text
    "w<end_working_out><SOLUTION></SOLUTION>",                 # empty answer
    "w<SOLUTION>1</SOLUTION><end_working_out>",                # out of order
    "w<end_working_out>w<end_working_out><SOLUTION>1</SOLUTION>",  # repeated tag
    "w<end_working_out> chatter <SOLUTION>1</SOLUTION>",      # text between the blocks
    "", None, 12,
])
def test_unsloth_format_violations(text):
    assert not get_format("unsloth").check_format(text)


def test_boxed_inside_solution_and_think():
    assert get_format("unsloth").extract_answer("w<end_working_out><SOLUTION>$\\boxed{1,000}$.</SOLUTION>") == "1,000"
    think = get_format("think")
    text = "let me try \\boxed{3}... no.\n</think>\n\nSo the answer is \\boxed{\\frac{1}{2}}."
    assert think.extract_answer(text) == "\\frac{1}{2}"
    assert think.check_format(text)
    assert not think.check_format("no closing think \\boxed{3}")


def test_dapo_answer_line():
    fmt = get_format("dapo")
    assert fmt.extract_answer("work\nAnswer: $34$") == "34"
    assert fmt.check_format("work\nAnswer: 34")
    assert not fmt.check_format("Answer: 34\nmore text after")


def test_user_format_from_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsystem_prompt: Think in <w> and answer in <a>.\n"
                    "reasoning_start: <w>\nreasoning_end: </w>\nanswer_start: <a>\nanswer_end: </a>\nprefill: <w>\n")
    fmt = get_format(str(path))
    assert fmt.render_completion("r", "5") == "r</w>\n<a>5</a>"
    assert fmt.extract_answer("r</w>\n<a>5</a>") == "5"
    register_format(load_format(path))
    assert get_format("mine").name == "mine"
    with pytest.raises(ValueError, match="already exists"):
        register_format(fmt)


@pytest.mark.parametrize("spec,message", [
    ({"name": "x", "system_prompt": "s", "colour": "red"}, "unknown format field"),
    ({"name": "x", "system_prompt": "s", "template": "{reasoning}"}, "must contain {answer}"),
    ({"name": "x", "system_prompt": "s", "template": "{answer}", "answer_style": "boxed", "prefill": "<p>"},
     "must start with the prefill"),
    ({"name": "x", "system_prompt": "s", "template": "{answer}"}, "tags style needs answer_start"),
    ({"system_prompt": "s", "answer_start": "<a>", "answer_end": "</a>"}, "bad format"),
    ("nope", "unknown format"),
])
def test_bad_formats_are_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        get_format(spec) if isinstance(spec, str) else format_from_dict(spec)


def test_prompt_with_real_qwen3_template(qwen3_tokenizer):
    unsloth = get_format("unsloth").build_prompt(qwen3_tokenizer, "What is 17+17?")
    assert unsloth.startswith("<|im_start|>system\n")
    assert unsloth.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n<start_working_out>")  # thinking off
    think = get_format("think").build_prompt(qwen3_tokenizer, "What is 17+17?")
    assert think.endswith("<|im_start|>assistant\n<think>\n")
    assert think.split("<|im_start|>assistant\n")[1] == "<think>\n"  # thinking on: no empty block, prefill once


def test_prompt_without_chat_template():
    class Plain:
        chat_template = None
        eos_token = "</s>"

    fmt = get_format("unsloth")
    assert fmt.build_prompt(Plain(), "Q?") == fmt.system_prompt + "</s>Q?<start_working_out>"


def test_format_is_immutable():
    with pytest.raises(Exception):
        get_format("xml").name = "other"
    assert isinstance(get_format(get_format("xml")), Format)
