"""Recipes: the ``aha`` command line and its Python API.

>>> from aha.recipes import load_recipe
>>> load_recipe("tiny-qwen3-smoke", overrides={"grpo.max_steps": 2}).grpo.trl["max_steps"]
2
"""

from .api import Answers, RunResult, find_recipe, load_recipe, run, state_of, try_model
from .schema import Recipe, RecipeError

__all__ = ["Answers", "Recipe", "RecipeError", "RunResult", "find_recipe", "load_recipe", "run", "state_of",
           "try_model"]
