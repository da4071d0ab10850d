"""A rehearsal (``aha run RECIPE --rehearse``): the recipe run whole on a CPU, every stage on, before a
GPU run has its one try. Every value stays as written except the counts (problems, examples, steps,
generations, samples) and what only a GPU has: the model becomes its twin (the real architecture's
config cut down, random weights, the real tokenizer, chat template and generation settings; see
``recipes/twins``), training runs on the hf backend, and where vLLM is installed every evaluation
runs on a vLLM engine sized as the GPU run's is (``model.max_seq_length``), on each task's longest
prompts, with the recipe's own ``eval.max_new_tokens``: every length limit is met for real.

What a rehearsal cannot cover is Unsloth's own code (its loader, patched trainers, merged and GGUF
savers) and bitsandbytes' 8-bit optimizers (``adamw_8bit`` trains as ``adamw_torch`` here): the Unsloth
contract tests (``tests/unsloth_contract``) and a GPU check hold those."""

from __future__ import annotations

import importlib.util
from typing import Any

from aha.eval.tasks import DATA

from .config.load import set_value
from .config.schema import TWIN_CONTEXT, RecipeError

GSM8K_TRAIN = DATA / "gsm8k" / "train-rehearsal.jsonl"
SUFFIX = "-rehearsal"  # its run folder is never the real run's
# The counts a rehearsal cuts, and to what: enough for every stage to do its whole job once.
COUNTS = {"sft.num_examples": 2, "sft.max_steps": 1, "sft.per_device_train_batch_size": 2,
          "sft.gradient_accumulation_steps": 1, "grpo.num_prompts": 8, "grpo.max_steps": 1, "grpo.num_generations": 2,
          "grpo.per_device_train_batch_size": 2, "grpo.gradient_accumulation_steps": 1, "grpo.preflight_prompts": 2,
          "rft.rounds": 1, "eval.sampled_limit": 1, "export.verify_problems": 2}
EVAL_PROBLEMS = 1  # per task: its longest
SAMPLES = 2  # k of avg@k and of the sampled evaluation, when the recipe samples


def rehearse(data: dict[str, Any]) -> dict[str, Any]:
    """The rehearsal of a recipe's mapping (changed in place, and returned).

    >>> data = rehearse({"name": "x", "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
    ...                  "eval": {"tasks": [{"task": "math500", "limit": None}, {"task": "aime24", "k": 16}]}})
    >>> data["name"], data["model"]["name"], data["model"]["backend"], data["grpo"]["max_steps"]
    ('x-rehearsal', 'builtin:twin-qwen2.5-0.5b-instruct', 'hf', 1)
    >>> data["eval"]["tasks"]
    [{'task': 'math500', 'limit': 1, 'longest': True}, {'task': 'aime24', 'k': 2, 'limit': 1, 'longest': True}]
    """
    from .training.models import twin_of

    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    twin = twin_of(str(model.get("name", "")))
    if twin is None:
        raise RecipeError(f"--rehearse: {model.get('name')!r} has no twin here; rehearsals run on the twins of the "
                          f"shipped GPU recipes' models ({', '.join(n.removeprefix('builtin:twin-') for n in TWIN_CONTEXT)})")
    data["name"] = f"{data.get('name', 'recipe')}{SUFFIX}"
    vllm = importlib.util.find_spec("vllm") is not None
    for key, value in {"model.name": twin, "model.backend": "hf", "model.use_vllm": vllm, "model.vllm_mode": "colocate",
                       "model.load_in_4bit": False, "export.gguf": None, **COUNTS}.items():
        set_value(data, key, value)
    for section in ("sft", "grpo"):  # bitsandbytes' 8-bit optimizers need a GPU: the same AdamW in 32 bits here
        optim = str((data.get(section) or {}).get("optim", ""))
        if "8bit" in optim or "bnb" in optim or optim.startswith("paged"):
            set_value(data, f"{section}.optim", "adamw_torch")
    # Random weights learn nothing: the preflight runs whole, and its verdict is said, not acted on.
    set_value(data, "grpo.preflight", "warn")
    set_value(data, "grpo.select", "all")
    for key, section in (("data.path", data.get("data")), ("sft.path", data.get("sft"))):
        task = (section or {}).get("task") or (data.get("data") or {}).get("task")
        if task == "gsm8k" and not (section or {}).get("path"):  # the hub's train split: its longest rows, shipped
            set_value(data, key, str(GSM8K_TRAIN))
    evaluation = data.get("eval") if isinstance(data.get("eval"), dict) else {}
    if evaluation.get("sampled_k"):
        set_value(data, "eval.sampled_k", SAMPLES)
    tasks = evaluation.get("tasks")
    if isinstance(tasks, list):
        set_value(data, "eval.tasks", [{**t, "limit": EVAL_PROBLEMS, "longest": True,
                                        **({"k": SAMPLES} if int(t.get("k", 1) or 1) > 1 else {})}
                                       if isinstance(t, dict) else t for t in tasks])
    return data
