"""Layered, TRL-compatible reward functions.

>>> from aha.rewards import get_reward
>>> exact = get_reward("format_exact", format="unsloth")
>>> exact(["Let me add.\\n17+17=34<end_working_out><SOLUTION>34</SOLUTION>"])
[3.0]
"""

from .core import KINDS, completion_text
from .explain import explain
from .layers import (
    LAYERS, Layer, check_answer_exact, check_answer_numeric, check_dapo_answer, check_integer, check_math_verify,
    check_number, format_approximate, format_exact, length_penalty, repetition_penalty, truncation_penalty,
    xml_count, xml_soft_format, xml_strict_format,
)
from .mathverify import math_equal
from .model import RewardModel
from .references import UserCodeError, UserReward, call_bounded, is_reference, load_function, set_user_code_timeout
from .registry import (PUBLISHED_NAMES, PUBLISHED_RECIPES, Reward, get_reward, published_rewards, reward_kind,
                       reward_names, reward_options)

__all__ = [
    "KINDS", "LAYERS", "Layer", "PUBLISHED_NAMES", "PUBLISHED_RECIPES", "Reward", "RewardModel", "UserCodeError", "UserReward",
    "call_bounded", "is_reference", "set_user_code_timeout",
    "load_function", "check_answer_exact", "check_answer_numeric",
    "check_dapo_answer", "check_integer", "check_math_verify", "check_number", "completion_text", "explain",
    "format_approximate", "format_exact", "get_reward", "length_penalty", "math_equal", "published_rewards",
    "repetition_penalty", "reward_kind", "reward_names", "reward_options", "truncation_penalty", "xml_count", "xml_soft_format", "xml_strict_format",
]
