"""Recipes: the ``aha`` command line and its Python API.

>>> from aha.recipes import load_recipe
>>> load_recipe("tiny-qwen3-smoke", overrides={"grpo.max_steps": 2}).grpo.args.max_steps
2

The package is laid out by what it does: ``config`` (the recipe's schema, loading and
validation), ``training`` (models, backends, data, TRL's trainers, export writers),
``stages`` (the stage table, the runner and each stage), ``launch`` (processes and the
command lines for accelerate and vLLM's server); ``api`` and ``cli`` are the two ways in.
"""

from .api import Answers, RunResult, find_recipe, load_recipe, run, state_of, try_model
from .config.schema import Recipe, RecipeError

__all__ = ["Answers", "Recipe", "RecipeError", "RunResult", "find_recipe", "load_recipe", "run", "state_of",
           "try_model"]
