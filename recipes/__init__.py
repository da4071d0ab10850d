"""Recipes and the ``aha`` command line."""
