"""Writes this example's data (run it again to get the same files): unit-conversion word problems,
written for aha, with fields a user's own data set might have (``q``, ``final``, ``worked``, ``uid``,
``unit``). Training rows go to train.csv, evaluation rows to test.jsonl; a few evaluation problems
also appear in the training file reworded or under the same id, as files cut from one data set
often do, and aha must keep them out of training."""

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
CONVERSIONS = [  # (from unit, to unit, factor, thing)
    ("meters", "centimeters", 100, "A rope is {n} {a} long. How many {b} long is it?"),
    ("kilograms", "grams", 1000, "A bag of flour weighs {n} {a}. How many {b} does it weigh?"),
    ("hours", "minutes", 60, "A train ride takes {n} {a}. How many {b} does it take?"),
    ("minutes", "seconds", 60, "A song lasts {n} {a}. How many {b} does it last?"),
    ("liters", "milliliters", 1000, "A bottle holds {n} {a} of water. How many {b} does it hold?"),
    ("days", "hours", 24, "A trip lasts {n} {a}. How many {b} does it last?"),
    ("feet", "inches", 12, "A shelf is {n} {a} wide. How many {b} wide is it?"),
    ("weeks", "days", 7, "A course runs for {n} {a}. How many {b} does it run for?"),
]


def rows(seed: int, count: int, prefix: str) -> list[dict]:
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < count:
        a, b, factor, template = rng.choice(CONVERSIONS)
        n = rng.randint(2, 19)
        q = template.format(n=n, a=a, b=b)
        if q in seen:
            continue
        seen.add(q)
        out.append({"uid": f"{prefix}{len(out):03d}", "q": q, "final": str(n * factor), "unit": b,
                    "worked": f"1 {a[:-1]} is {factor} {b}, so {n} {a} are {n} x {factor} = {n * factor} {b}."})
    return out


def main() -> None:
    test = rows(seed=1, count=24, prefix="u")
    train = [r for r in rows(seed=2, count=140, prefix="t") if r["q"] not in {t["q"] for t in test}][:120]
    train[5] = {**test[0], "uid": train[5]["uid"], "q": test[0]["q"].replace("How many", "So how many")}  # reworded
    train[9] = {**test[1]}  # the same problem under the same id
    with open(HERE / "test.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in test)
    with open(HERE / "train.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["uid", "q", "final", "worked", "unit"])
        writer.writeheader()
        writer.writerows(train)


if __name__ == "__main__":
    main()
