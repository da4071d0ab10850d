"""Evaluation: tasks, generation backends, grading, paired before/after reports."""
