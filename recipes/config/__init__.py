"""The recipe: its schema (one dataclass per YAML section), loading (YAML, ``--set``
overrides, types) and validation (everything checked before anything loads, TRL's
configs built once)."""

from .load import apply_override, read_recipe_data, recipe_from_dict
from .schema import BUILTIN_MODELS, Recipe, RecipeError, resolve_path

__all__ = ["BUILTIN_MODELS", "Recipe", "RecipeError", "apply_override", "read_recipe_data",
           "recipe_from_dict", "resolve_path"]
