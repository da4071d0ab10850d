"""The built-in reasoning formats."""

from __future__ import annotations

from .format import Format

UNSLOTH = Format(
    name="unsloth",
    system_prompt=(
        "Solve the problem. Reason step by step and write your working out between "
        "<start_working_out> and <end_working_out>. Then write only the final answer "
        "between <SOLUTION> and </SOLUTION>."
    ),
    template="<start_working_out>{reasoning}<end_working_out><SOLUTION>{answer}</SOLUTION>",
    reasoning_start="<start_working_out>",
    reasoning_end="<end_working_out>",
    answer_start="<SOLUTION>",
    answer_end="</SOLUTION>",
    prefill="<start_working_out>",  # the recipe's generation prompt ends with the reasoning tag
    enable_thinking=False,
)

XML = Format(
    name="xml",
    system_prompt=(
        "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
    ),
    template="<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>\n",
    reasoning_start="<reasoning>",
    reasoning_end="</reasoning>",
    answer_start="<answer>",
    answer_end="</answer>",
    enable_thinking=False,
)

THINK = Format(
    name="think",
    system_prompt=(
        "Think the problem through inside <think> and </think>. After thinking, state the "
        "final answer as \\boxed{...}."
    ),
    template="<think>\n{reasoning}\n</think>\n\nThe final answer is $\\boxed{{answer}}$.",
    reasoning_start="<think>",
    reasoning_end="</think>",
    answer_style="boxed",
    prefill="<think>\n",  # R1-style: the model starts inside its thoughts
    enable_thinking=True,  # Qwen3: keep the template from inserting an empty think block
)

BOXED = Format(
    name="boxed",
    system_prompt="Reason step by step, and put your final answer within \\boxed{}.",
    template="{reasoning}\n\nThe final answer is $\\boxed{{answer}}$.",
    answer_style="boxed",
    enable_thinking=False,
)

DAPO = Format(
    name="dapo",
    system_prompt=(
        "Solve the problem step by step. The last line of your response must be of the "
        "form Answer: $Answer, where $Answer is the final answer."
    ),
    template="{reasoning}\n\nAnswer: {answer}",
    answer_style="answer_line",
    enable_thinking=False,
)

BUILTIN_FORMATS = (UNSLOTH, XML, THINK, BOXED, DAPO)
