"""Reward functions and a grader of this example's own, as a user writes them for aha (and for TRL).

A reward function takes the completions and, as keyword arguments, the dataset's columns (here
``answer``, ``question``, ``id`` and this data set's own ``unit``) plus what TRL passes itself
(``prompts``, ``completion_ids``, ...): keep ``**kwargs``. It returns one number per completion
(``None`` skips one). A grader takes the extracted answer and the gold and returns True or False.

>>> says_the_unit(["so 4 x 60 = 240 minutes", "240"], unit=["minutes", "minutes"])
[0.5, 0.0]
>>> close_to_gold(["<SOLUTION>246</SOLUTION>", "<SOLUTION>ten</SOLUTION>"], answer=["240", "240"])
[0.5, None]
>>> within_one_percent("241", "240"), within_one_percent("250", "240")
(True, False)
"""

import re

SOLUTION = re.compile(r"<SOLUTION>(.*?)</SOLUTION>", re.DOTALL)


def says_the_unit(completions, unit, **kwargs):
    """0.5 when the working out names the unit the question asks for: a habit worth rewarding."""
    return [0.5 if u and u in c else 0.0 for c, u in zip(completions, unit)]


def close_to_gold(completions, answer, tolerance=0.05, **kwargs):
    """Partial credit by relative distance to the gold: 1 at the gold, 0 at ``tolerance`` and beyond.
    A completion without a number in its SOLUTION tags is skipped (None), not punished."""
    scores = []
    for completion, gold in zip(completions, answer):
        match = SOLUTION.search(completion)
        try:
            guess = float(match.group(1).replace(",", "").strip())
        except (AttributeError, ValueError):
            scores.append(None)
            continue
        distance = abs(guess - float(gold)) / max(abs(float(gold)), 1e-9)
        scores.append(max(0.0, 1.0 - distance / tolerance))
    return scores


def within_one_percent(answer, gold):
    """The grader: an answer within 1% of the gold counts as right."""
    try:
        return abs(float(answer.replace(",", "")) - float(gold)) <= 0.01 * abs(float(gold))
    except ValueError:
        return False
