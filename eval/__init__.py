"""Evaluation: tasks, generation backends, grading, resumable results, paired reports.

>>> from aha.eval import grade
>>> grade("2+2=4<end_working_out><SOLUTION>4</SOLUTION>", "4", format="unsloth")["strict"]
True
"""

from .backends import Generation, HFBackend, Sampling, VLLMBackend, load_model
from .compare import compare, write_report
from .grading import grade, pass_at_k, summarize
from .stats import mcnemar_exact, wilson_interval
from .runner import evaluate
from .tasks import TASKS, Problem, dapo_split, load_task, make_arith

__all__ = [
    "TASKS", "Generation", "HFBackend", "Problem", "Sampling", "VLLMBackend", "compare", "dapo_split", "evaluate",
    "grade", "load_model", "load_task", "make_arith", "mcnemar_exact", "pass_at_k", "summarize", "wilson_interval",
    "write_report",
]
