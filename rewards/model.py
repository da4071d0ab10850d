"""A reward model as a reward layer: a sequence-classification model scores the question and
the completion, as TRL scores with a reward model's id in ``reward_funcs``.

The text it reads is built the way the reward model expects: its own chat template (the
question as the user's turn, the completion as the assistant's) when its tokenizer has one,
else the prompt followed by the completion. Completions are scored in batches on the device
of the process that trains (under a launch, each process its own GPU). ``normalize`` maps each
score through a sigmoid into (0, 1), so a reward model's scale cannot drown the other layers.
"""

from __future__ import annotations

import threading
from typing import Any

from aha.formats import InputError

from .core import as_batch, completion_text
from .references import call_bounded


def training_device() -> Any:
    """The device of this process's training: accelerate's (each launched process its own GPU)."""
    from accelerate import PartialState

    return PartialState().device


class RewardModel:
    """``reward_model`` (options ``model``, ``normalize``, ``batch_size``, ``max_length``, ``label``).
    Loaded on first use, so building the reward list (and pickling it for TRL's workers) loads nothing."""

    kind = "other"  # a learned judge: neither the format nor a checked answer

    def __init__(self, model: str = "", normalize: bool = False, batch_size: int = 8, max_length: int = 2048,
                 label: int | None = None):
        if not isinstance(model, str) or not model:
            raise InputError("reward_model needs its model: {name: reward_model, model: PATH_OR_HUB_ID}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"reward_model batch_size must be a positive integer, not {batch_size!r}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise InputError(f"reward_model max_length must be a positive integer, not {max_length!r}")
        if not isinstance(normalize, bool):  # "false" in YAML quotes would read as true
            raise InputError(f"reward_model normalize must be true or false, not {normalize!r}")
        if label is not None and (not isinstance(label, int) or isinstance(label, bool) or label < 0):
            raise InputError(f"reward_model label must be a label's index (0, 1, ...), not {label!r}")
        self.model_name, self.normalize, self.batch_size, self.max_length = model, normalize, batch_size, max_length
        self.label = label
        self.__name__ = self.__qualname__ = "reward_model"
        self.errors = 0
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def load(self) -> tuple[Any, Any]:
        """The classifier and its tokenizer, on the training device (once)."""
        with self._lock:
            if self._loaded is None:
                from transformers import AutoModelForSequenceClassification, AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(self.model_name)
                    model, loading = AutoModelForSequenceClassification.from_pretrained(self.model_name,
                                                                                        output_loading_info=True)
                except (OSError, ValueError) as err:
                    raise InputError(f"reward_model {self.model_name}: cannot load a sequence-classification model "
                                     f"({str(err).splitlines()[0]})") from None
                # A causal LM loads as a classifier too, with a score head of random weights: its scores mean nothing.
                untrained = sorted(loading.get("missing_keys") or [])
                if untrained:
                    raise InputError(f"reward_model {self.model_name}: {', '.join(untrained[:3])} not in the checkpoint "
                                     f"(its architectures: {', '.join(model.config.architectures or ['none said'])}): "
                                     "a reward model is a sequence classifier trained as one, not a language model")
                labels = model.config.num_labels
                if self.label is None and labels != 1:
                    raise InputError(f"reward_model {self.model_name} has {labels} labels: say which one is the reward "
                                     "with the option label (its index)")
                if self.label is not None and not 0 <= self.label < labels:
                    raise InputError(f"reward_model label {self.label} is not one of the model's {labels} labels")
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token
                model.config.pad_token_id = tokenizer.pad_token_id  # batches: the score is read at the last real token
                tokenizer.padding_side = "right"
                self._loaded = (model.to(training_device()).eval(), tokenizer)
            return self._loaded

    def texts(self, tokenizer: Any, prompts: list[Any], completions: list[str], questions: list[Any]) -> list[str]:
        """What the reward model reads, one text per completion."""
        out = []
        for i, completion in enumerate(completions):
            question = questions[i] if questions and i < len(questions) and questions[i] is not None else None
            if getattr(tokenizer, "chat_template", None) and question is not None:
                out.append(tokenizer.apply_chat_template(
                    [{"role": "user", "content": str(question)}, {"role": "assistant", "content": completion}],
                    tokenize=False))
            else:
                prompt = completion_text(prompts[i]) if prompts and i < len(prompts) else ""
                out.append((prompt or "") + completion)
        return out

    def __call__(self, completions: Any = None, prompts: Any = None, question: Any = None,
                 **columns: Any) -> list[float | None]:
        import torch

        batch = as_batch(completions)
        texts = [completion_text(c) for c in batch]
        scored = [i for i, t in enumerate(texts) if t is not None]
        out: list[float | None] = [None] * len(batch)
        if not scored:
            return out
        model, tokenizer = self.load()
        inputs = self.texts(tokenizer, [prompts[i] for i in scored] if prompts else [], [texts[i] for i in scored],
                            [question[i] for i in scored] if isinstance(question, (list, tuple)) else [])
        for start in range(0, len(inputs), self.batch_size):
            encoded = tokenizer(inputs[start:start + self.batch_size], return_tensors="pt", padding=True,
                                truncation=True, max_length=self.max_length, add_special_tokens=False)
            def forward(encoded: Any = encoded) -> Any:
                with torch.no_grad():  # grad mode is per thread: set where the forward runs
                    return model(**encoded.to(model.device)).logits.float()

            logits = call_bounded(f"reward_model {self.model_name}", forward)
            values = logits[:, self.label or 0]
            if self.normalize:
                values = torch.sigmoid(values)
            for j, value in enumerate(values.tolist()):
                out[scored[start + j]] = value
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_loaded")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._loaded, self._lock = None, threading.Lock()

    def __repr__(self) -> str:
        return f"RewardModel({self.model_name}, normalize={self.normalize})"
