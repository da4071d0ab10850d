"""The names of the metrics an evaluation reports, in one place, so the harness, the run
report, the model card and the Python API read the same keys.

>>> accuracy("strict"), pass_at(4, "strict"), maj_at(4)
('accuracy_strict', 'pass@4_strict', 'maj@4')
"""

VERDICTS = ("strict", "lenient", "math_verify", "format_ok")  # what grade() decides per completion
PROBLEMS = "problems"
FORMAT_COMPLIANCE = "format_compliance"
TRUNCATION_RATE = "truncation_rate"
MEAN_TOKENS = "mean_completion_tokens"


def accuracy(verdict: str) -> str:
    """Greedy (first sample) accuracy by ``verdict``."""
    return f"accuracy_{verdict}"


def interval(metric: str) -> str:
    """The 95% interval stored beside ``metric``."""
    return f"{metric}_ci95"


def pass_at(k: int, verdict: str) -> str:
    """Unbiased pass@k by ``verdict``; pass@1 is the mean per-problem pass rate (avg@k)."""
    return f"pass@{k}_{verdict}"


def maj_at(k: int) -> str:
    return f"maj@{k}"
