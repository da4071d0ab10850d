"""Rewards by name: ``get_reward(name, format=..., mode=..., **options)``."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

from aha.formats import InputError, get_format

from .core import ErrorTally, log, tallied
from .layers import LAYERS
from .model import RewardModel
from .references import UserReward, is_reference

RewardFn = Callable[..., list]

# The names the published recipes give their functions (TRL logs rewards under them).
PUBLISHED_NAMES = {
    "match_format_exactly": "format_exact",
    "match_format_approximately": "format_approximate",
    "check_answer": "check_answer_numeric",
    "check_numbers": "check_number",
    "xmlcount_reward_func": "xml_count",
    "soft_format_reward_func": "xml_soft_format",
    "strict_format_reward_func": "xml_strict_format",
    "int_reward_func": "check_integer",
    "correctness_reward_func": "check_answer_exact",
}
_PUBLISHED_BY_LAYER = {layer: name for name, layer in PUBLISHED_NAMES.items()}

# The published recipes' reward lists, in their order.
PUBLISHED_RECIPES = {
    "unsloth": ("unsloth", ["format_exact", "format_approximate", "check_answer_numeric", "check_number"]),
    "xml": ("xml", ["xml_count", "xml_soft_format", "xml_strict_format", "check_integer", "check_answer_exact"]),
}


REWARD_MODEL = "reward_model"  # a sequence-classification model as a layer (aha.rewards.model)


def reward_kind(reward: Any) -> str:
    """What a reward scores (``aha.rewards.layers.KINDS``), as it declares it: a layer's own
    ``kind``, a bound reward's, your function's ``kind`` attribute; ``other`` when nothing says.

    >>> reward_kind("match_format_exactly"), reward_kind(get_reward("check_number")), reward_kind(len)
    ('format', 'answer', 'other')
    """
    if isinstance(reward, str):
        layer_name = PUBLISHED_NAMES.get(reward, reward)
        return LAYERS[layer_name].kind if layer_name in LAYERS else "other"
    return getattr(reward, "kind", "other")


def reward_names() -> list[str]:
    return sorted([*LAYERS, REWARD_MODEL])


def reward_options(name: str, mode: str = "default") -> tuple[str, ...]:
    """The options a reward layer takes (its keyword-only parameters), by layer or published name.

    >>> "max_completion_length" in reward_options("truncation_penalty"), "max_completion_length" in reward_options("check_number")
    (True, False)
    """
    if name == REWARD_MODEL:
        return tuple(p for p in inspect.signature(RewardModel).parameters)
    if is_reference(name) or callable(name):
        return ()  # the user's function: its options are what the recipe gives it
    layer_name = PUBLISHED_NAMES.get(name, name)
    if layer_name not in LAYERS:
        raise InputError(f"unknown reward {name!r}; known: {', '.join(reward_names())}, or your own function "
                         "(path/to/file.py:fn or package.module:fn)")
    return tuple(p for p, v in inspect.signature(LAYERS[layer_name].for_mode(mode)).parameters.items()
                 if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "mode")


def get_reward(name: str, format: Any = "unsloth", mode: str = "default", **options: Any) -> RewardFn:
    """A TRL reward function by name, with its format, mode and options bound.

    Its ``__name__`` is the layer name in default mode and the published recipe's
    function name in faithful mode, so TRL's logs line up with the notebooks'.

    >>> fn = get_reward("check_answer", format="unsloth", mode="faithful", eos_token="<|endoftext|>")
    >>> fn.__name__, fn(["<end_working_out><SOLUTION>34</SOLUTION>"], answer=["34"])
    ('check_answer', [5.0])

    ``name`` may also be ``reward_model`` (options ``model``, ``normalize``, ...), your own
    function by reference (``path/to/file.py:fn``, ``package.module:fn``: importing it runs
    the file) or, in Python, the function itself; options are passed to it as keywords.
    """
    if name == REWARD_MODEL:
        try:
            return RewardModel(**options)
        except TypeError as err:
            raise InputError(f"reward {REWARD_MODEL}: {err}; options: {', '.join(reward_options(REWARD_MODEL))}") from None
    if is_reference(name) or callable(name):
        return UserReward(name, options)
    layer_name = PUBLISHED_NAMES.get(name, name)
    if layer_name not in LAYERS:
        reward_options(name)  # the one message for an unknown reward
    impl = LAYERS[layer_name].for_mode(mode)  # the mode is chosen here, once
    accepted = inspect.signature(impl).parameters
    unknown = sorted(k for k in options if k not in accepted and k != "mode")
    if unknown:
        keyword_only = [p for p, v in inspect.signature(LAYERS[layer_name]).parameters.items()
                        if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "mode"]
        raise InputError(f"reward {layer_name!r} has no option(s) {unknown}; options: {keyword_only}")
    bound = {k: v for k, v in options.items() if k != "mode"}
    if "format" in accepted:
        bound["format"] = get_format(format)
    impl([], **bound)  # fail now, not at the first training step, on a format the layer cannot read
    name_shown = _PUBLISHED_BY_LAYER.get(layer_name, layer_name) if mode == "faithful" else layer_name
    return Reward(layer_name, mode, bound, name_shown)


class Reward:
    """A reward layer with its mode, format and options bound: a plain callable with TRL's
    signature, ``reward(completions, **columns) -> list[float | None]``. A class rather than
    a closure so it pickles (TRL's async GRPO sends rewards to other processes).

    It counts the completions its layer raised on (they score None) in ``errors``; each
    call keeps its own tally, so rewards scoring at once in several threads never mix
    their counts.

    >>> import pickle
    >>> fn = pickle.loads(pickle.dumps(get_reward("check_number")))
    >>> fn.__name__, fn(["<end_working_out><SOLUTION>34</SOLUTION>"], answer=["34"])
    ('check_number', [3.5])
    """

    def __init__(self, layer_name: str, mode: str, bound: dict[str, Any], name: str):
        self.layer_name, self.mode, self.bound = layer_name, mode, bound
        self.kind = LAYERS[layer_name].kind
        self.__name__ = self.__qualname__ = name
        self.__doc__ = LAYERS[layer_name].__doc__
        self.errors = 0  # completions on which the layer raised (scored None), over this object's life
        self._lock = threading.Lock()
        self._said_traceback = self._said_all_failed = False

    def __call__(self, completions: Any = None, **columns: Any) -> list:
        impl = LAYERS[self.layer_name].for_mode(self.mode)
        tally = ErrorTally()
        scores = tallied(lambda: impl(completions, **{**columns, **self.bound}), tally)
        if tally.count:
            with self._lock:
                self.errors += tally.count
                first, self._said_traceback = not self._said_traceback, True
                every = tally.count == len(scores) and not self._said_all_failed
                self._said_all_failed = self._said_all_failed or every
            if first:
                log.warning("reward %s raised on a completion; it scores None there and every such error is counted. "
                            "First traceback:\n%s", self.__name__, tally.first_traceback)
            if every:
                log.warning("reward %s raised on every completion of a batch (%d): it gives GRPO no signal",
                            self.__name__, tally.count)
        return scores

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={getattr(v, 'name', v)!r}" for k, v in self.bound.items())
        return f"Reward({self.__name__}: {self.layer_name}[{self.mode}]({options}))"


def published_rewards(recipe: str, mode: str = "faithful", **options: Any) -> list[RewardFn]:
    """The reward list of a published recipe (``unsloth`` or ``xml``), in its order.

    >>> [f.__name__ for f in published_rewards("xml")]
    ['xmlcount_reward_func', 'soft_format_reward_func', 'strict_format_reward_func', 'int_reward_func', 'correctness_reward_func']
    """
    if recipe not in PUBLISHED_RECIPES:
        raise InputError(f"unknown published recipe {recipe!r}; known: {', '.join(PUBLISHED_RECIPES)}")
    fmt, names = PUBLISHED_RECIPES[recipe]
    out = []
    for name in names:
        accepted = inspect.signature(LAYERS[name].for_mode(mode)).parameters
        out.append(get_reward(name, format=fmt, mode=mode, **{k: v for k, v in options.items() if k in accepted}))
    return out
