"""A reasoning format: the one definition that SFT data, rewards and eval share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from .answers import clean_answer, find_last_boxed
from .errors import InputError

AnswerStyle = Literal["tags", "boxed", "answer_line"]
Layout = Literal["strict", "template", "soft"]
_PLACEHOLDER = re.compile(r"\{(reasoning|answer)\}")
# DAPO/verl convention: the last "Answer: ..." line, looked for near the end.
ANSWER_LINE_PATTERN = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")
DAPO_TAIL_CHARS = 300
DEFAULT_EOS = ("<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<｜end▁of▁sentence｜>")


def last_answer_line(text: str) -> str | None:
    """What follows ``Answer:`` on the last such line within the last 300 characters, as
    written (DAPO's rule, as verl reads it): the one reader of answer lines in the package.

    >>> last_answer_line("Answer: 3\\nso... answer: 41 "), last_answer_line("no line")
    ('41 ', None)
    """
    found = None
    for found in ANSWER_LINE_PATTERN.finditer(text[-DAPO_TAIL_CHARS:]):
        pass
    return found.group(1) if found else None


def _strip_tail(text: str, eos_tokens: tuple[str, ...]) -> str:
    """Drop trailing whitespace and end-of-sequence tokens (in any order)."""
    s = text.rstrip()
    changed = True
    while changed:
        changed = False
        for eos in eos_tokens:
            if eos and s.endswith(eos):
                s = s[: -len(eos)].rstrip()
                changed = True
    return s


@dataclass(frozen=True)
class Format:
    """How a model is asked to reason and answer, and how its answer is read back.

    Attributes:
        name: registry name (``unsloth``, ``xml``, ...).
        system_prompt: the system message that asks for this format.
        template: a full assistant response, with ``{reasoning}`` and ``{answer}``
            standing for the two parts; every other character is literal.
        reasoning_start / reasoning_end / answer_start / answer_end: the tags, or "".
        answer_style: ``tags`` (answer between answer tags), ``boxed`` (last
            ``\\boxed{}`` after the reasoning) or ``answer_line`` (last ``Answer:`` line).
        prefill: text the prompt already ends with, so completions start after it
            (the Unsloth recipe prefills ``<start_working_out>``). Must start ``template``.
        enable_thinking: passed to chat templates that know it (Qwen3); ``None`` = don't pass.

    >>> f = Format(name="demo", system_prompt="Think, then answer.",
    ...            template="<r>{reasoning}</r><a>{answer}</a>",
    ...            reasoning_start="<r>", reasoning_end="</r>", answer_start="<a>", answer_end="</a>",
    ...            prefill="<r>")
    >>> f.render_completion("2+2 is 4", "4")
    '2+2 is 4</r><a>4</a>'
    >>> f.extract_answer("2+2 is 4</r><a>4</a>"), f.check_format("2+2 is 4</r><a>4</a>")
    ('4', True)
    """

    name: str
    system_prompt: str
    template: str
    reasoning_start: str = ""
    reasoning_end: str = ""
    answer_start: str = ""
    answer_end: str = ""
    answer_style: AnswerStyle = "tags"
    prefill: str = ""
    enable_thinking: bool | None = None
    eos_tokens: tuple[str, ...] = field(default=DEFAULT_EOS)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise InputError("a format needs a non-empty name")
        if self.answer_style not in ("tags", "boxed", "answer_line"):
            raise InputError(f"format {self.name!r}: answer_style must be tags, boxed or answer_line, not {self.answer_style!r}")
        if "{answer}" not in self.template:
            raise InputError(f"format {self.name!r}: template must contain {{answer}}")
        if self.answer_style == "tags" and not (self.answer_start and self.answer_end):
            raise InputError(f"format {self.name!r}: tags style needs answer_start and answer_end")
        if not self.template.startswith(self.prefill):
            raise InputError(f"format {self.name!r}: template must start with the prefill {self.prefill!r}")
        for tag in self.tags:
            if tag not in self.template:
                raise InputError(f"format {self.name!r}: tag {tag!r} does not occur in the template")

    def strip_tail(self, text: str) -> str:
        """``text`` without trailing whitespace and end-of-sequence tokens."""
        return _strip_tail(text, self.eos_tokens)

    # ----- the tags -------------------------------------------------------------
    @cached_property  # read on every reward call: computed once per format
    def tags(self) -> tuple[str, ...]:
        """The non-empty tags, in the order they are written."""
        return tuple(t for t in (self.reasoning_start, self.reasoning_end, self.answer_start, self.answer_end) if t)

    @cached_property
    def generated_tags(self) -> tuple[str, ...]:
        """The tags a completion must write itself (those not already in the prefill)."""
        return tuple(t for t in self.tags if t not in self.prefill)

    # ----- prompts ----------------------------------------------------------------
    def messages(self, question: str) -> list[dict[str, str]]:
        """Chat messages for one question (system prompt first, if any)."""
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return msgs + [{"role": "user", "content": question}]

    def ask(self, question: str, instruction: str = "") -> str:
        """The user's message: the question, with a task's instruction (such as "put your final
        answer within \\boxed{}") when this format reads its answers from ``\\boxed{}``; a
        format with answer tags or an answer line says where the answer goes in its system
        prompt, and an instruction asking for a box would contradict it.

        >>> from aha.formats import get_format
        >>> get_format("boxed").ask("1+1?", "Box it."), get_format("unsloth").ask("1+1?", "Box it.")
        ('1+1?\\nBox it.', '1+1?')
        """
        return f"{question}\n{instruction}" if instruction and self.answer_style == "boxed" else question

    def build_prompt(self, tokenizer: Any, question: str, instruction: str = "") -> str:
        """The exact prompt text: chat template + generation prompt + prefill, for the question
        as :meth:`ask` puts it.

        Tokenizers without a chat template get the plain layout of the Unsloth
        recipe: system text + eos, user text, then the prefill.
        """
        question = self.ask(question, instruction)
        if getattr(tokenizer, "chat_template", None):
            kwargs = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
            text = tokenizer.apply_chat_template(self.messages(question), tokenize=False, add_generation_prompt=True, **kwargs)
        else:
            eos = getattr(tokenizer, "eos_token", None) or ""
            text = (self.system_prompt + eos if self.system_prompt else "") + question
        # Some templates (Qwen3 thinking variants) already end with the prefill tag.
        return text if self.prefill and text.endswith(self.prefill) else text + self.prefill

    # ----- SFT targets --------------------------------------------------------------
    def render_response(self, reasoning: str, answer: str) -> str:
        """The whole assistant response for (reasoning, answer), prefill included."""
        parts = {"reasoning": reasoning.strip(), "answer": str(answer).strip()}
        return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], self.template)

    def render_completion(self, reasoning: str, answer: str) -> str:
        """What the model must generate after the prompt: the response minus the prefill."""
        return self.render_response(reasoning, answer)[len(self.prefill) :]

    # ----- reading answers back ---------------------------------------------------------
    def answer_region(self, text: str) -> str:
        """The part of a completion after the reasoning, where the answer belongs."""
        if self.reasoning_end and self.answer_style != "tags":
            cut = text.rfind(self.reasoning_end)
            if cut >= 0:
                return text[cut + len(self.reasoning_end) :]
        return text

    def extract_answer(self, text: object) -> str | None:
        """The final answer as this format writes it, cleaned (``None`` if absent).

        A ``\\boxed{}`` inside the answer tags is unwrapped, so
        ``<SOLUTION>\\boxed{34}</SOLUTION>`` reads as ``34``.
        """
        if not isinstance(text, str) or not text:
            return None
        if self.answer_style == "tags":
            start = text.rfind(self.answer_start)
            if start < 0:
                return None
            start += len(self.answer_start)
            end = text.find(self.answer_end, start)
            if end < 0:
                return None
            answer = clean_answer(text[start:end])
        elif self.answer_style == "boxed":
            boxed = find_last_boxed(self.answer_region(text))
            answer = clean_answer(boxed) if boxed is not None else ""
        else:
            line = last_answer_line(text)
            answer = clean_answer(line) if line is not None else ""
        return answer or None

    # ----- layout: the one place that decides whether a completion follows the format ----------
    def format_violation(self, text: object, level: Layout = "strict") -> str | None:
        """Why ``text`` does not follow this format, or ``None`` if it does. Every layout
        check in the package (format rewards, grading, ``aha rewards explain``) is this
        method at one of three levels:

        - ``strict``: every generated tag exactly once and in order, the reasoning tag
          first, nothing between the reasoning and the answer, a non-empty answer, and
          nothing after it but whitespace and end-of-sequence tokens;
        - ``template``: exactly the template's text around the reasoning and the answer
          (its newlines included), with or without the prefill;
        - ``soft``: starts with the reasoning block, and the answer block follows it after
          any whitespace (the XML recipe's soft check, multi-line reasoning allowed).

        >>> from aha.formats import get_format
        >>> xml = get_format("xml")
        >>> xml.format_violation("Sure!\\n<reasoning>\\nr\\n</reasoning>\\n<answer>\\n4\\n</answer>")
        "text before <reasoning>: 'Sure!'"
        >>> xml.format_violation("<reasoning>\\nr\\n</reasoning>\\n<answer>\\n4\\n</answer>\\n", "template") is None
        True
        """
        if not isinstance(text, str):
            return f"not text but {type(text).__name__}"
        if not text.strip():
            return "empty completion"
        if level == "template":
            return self._template_violation(text)
        if level == "soft":
            return self._soft_violation(text)
        if level != "strict":
            raise InputError(f"layout level must be strict, template or soft, not {level!r}")
        return self._strict_violation(text)

    def check_format(self, text: object) -> bool:
        """Strict compliance (:meth:`format_violation` at ``strict``)."""
        return self.format_violation(text) is None

    def matches_template(self, text: object) -> bool:
        """The template's exact layout (:meth:`format_violation` at ``template``)."""
        return self.format_violation(text, "template") is None

    def _strict_violation(self, text: str) -> str | None:
        s = _strip_tail(text, self.eos_tokens).lstrip()
        if self.prefill.strip() and s.startswith(self.prefill.strip()):
            s = s[len(self.prefill.strip()) :]  # the model repeated the prefilled tag: allowed
        for tag in self.generated_tags:
            n = s.count(tag)
            if n != 1:
                return f"{tag} missing" if n == 0 else f"{tag} appears {n} times"
        positions = [s.find(t) for t in self.generated_tags]
        if positions != sorted(positions):
            return "tags out of order: " + " < ".join(t for _, t in sorted(zip(positions, self.generated_tags)))
        if self.reasoning_start in self.generated_tags and s.find(self.reasoning_start) != 0:
            return f"text before {self.reasoning_start}: {s[: s.find(self.reasoning_start)].strip()[:40]!r}"
        if self.answer_style == "tags":
            after = s[s.rfind(self.answer_end) + len(self.answer_end) :]
            if after.strip():
                return f"text after {self.answer_end}: {after.strip()[:40]!r}"
            if self.reasoning_end:
                between = s[s.find(self.reasoning_end) + len(self.reasoning_end) : s.find(self.answer_start)]
                if between.strip():
                    return f"text between {self.reasoning_end} and {self.answer_start}: {between.strip()[:40]!r}"
            return "empty answer" if self.extract_answer(s) is None else None
        if self.answer_style == "boxed":
            return "no \\boxed{} answer after the reasoning" if self.extract_answer(s) is None else None
        last_line = s.rsplit("\n", 1)[-1].strip()
        if ANSWER_LINE_PATTERN.match(last_line) is None:
            return f"the last line is not an answer line: {last_line[:40]!r}"
        return "empty answer" if self.extract_answer(s) is None else None

    def _template_violation(self, text: str) -> str | None:
        s = _strip_tail(text, self.eos_tokens)
        if self.prefill and not s.startswith(self.prefill):
            s = self.prefill + s
        literals = _PLACEHOLDER.split(self.template)[::2]  # the text around {reasoning}/{answer}
        first, middle, last = literals[0], literals[1:-1], literals[-1].rstrip()
        if not s.startswith(first):
            return f"does not start with {first!r}"
        if not s.endswith(last):
            return f"does not end with {last!r}"
        pos, end = len(first), len(s) - len(last)
        for literal in middle:  # the earliest occurrence is the best choice for a lazy match
            found = s.find(literal, pos)
            if found < 0 or found + len(literal) > end:
                return f"{literal!r} missing where the template has it"
            pos = found + len(literal)
        return None

    def _soft_violation(self, text: str) -> str | None:
        s = text.lstrip()
        if self.prefill.strip() and not s.startswith(self.prefill.strip()):
            s = self.prefill.strip() + s
        if self.answer_style != "tags" or not self.reasoning_end:
            return "no final answer found" if self.extract_answer(s) is None else None
        if self.reasoning_start and not s.startswith(self.reasoning_start):
            return f"does not start with {self.reasoning_start}"
        cut = s.find(self.reasoning_end)
        if cut < 0:
            return f"{self.reasoning_end} missing"
        while cut >= 0:  # the first closing reasoning tag followed by whitespace and the answer tag
            after = cut + len(self.reasoning_end)
            while after < len(s) and s[after].isspace():
                after += 1
            if s.startswith(self.answer_start, after):
                # a later start would only search less of the text: this one decides
                found = s.find(self.answer_end, after + len(self.answer_start)) >= 0
                return None if found else f"{self.answer_end} missing after {self.answer_start}"
            cut = s.find(self.reasoning_end, cut + 1)
        return f"no {self.answer_start} right after {self.reasoning_end}"
