"""The publish stage: a model card in the Hugging Face Hub's own format
(``huggingface_hub``'s ``ModelCard``, ``ModelCardData``, ``EvalResult``) for the exported
adapter and merged weights, carrying the run's evidence, and the hub upload when the
recipe asks for one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from aha.eval import metrics as names
from aha.eval.tasks import TASKS

from ..config.schema import Recipe
from ..training.export import push_folder
from .evaluate import EVAL_AFTER, EVAL_BEFORE, SAMPLED_SUFFIX
from .evidence import result_tables, reward_curves, verification_text
from .export import EXPORT
from .kernel import Context, Stage, plan
from .results import RECIPE_FILE, RunResults
from .training import trains

# The built-in models: where their weights come from and under what licence.
BUILTIN_ORIGINS = {"builtin:smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
                   "builtin:tiny-qwen3": (None, "apache-2.0")}
CARD_RECIPE = "aha_recipe.yaml"  # the recipe as run, beside the card, so the card's command reproduces it
CARD_CURVES = "reward_curves.png"  # the card's chart, beside it


def base_origin(recipe: Recipe) -> tuple[str | None, str | None]:
    """(hub id of the base model, its licence) as far as it can be known offline; None when not."""
    name = recipe.model.name
    if name in BUILTIN_ORIGINS:
        return BUILTIN_ORIGINS[name]
    folder = Path(name)
    if (folder / "README.md").is_file():  # a local model folder with a card of its own: inherit from it
        from huggingface_hub import ModelCard

        data = ModelCard.load(folder / "README.md").data
        base = data.base_model if isinstance(data.base_model, str) else None
        return base, data.license
    if name.count("/") == 1 and not folder.exists():  # a hub id: its card, if the hub (or its cache) has it
        try:
            from huggingface_hub import ModelCard

            return name, ModelCard.load(name).data.license
        except Exception:  # noqa: BLE001 - offline, gated, or no card: the licence is unknown
            return name, None
    return None, None


def _dataset_id(task: str) -> str:
    """The hub dataset a task's card names.

    >>> _dataset_id("gsm8k"), _dataset_id("arith-l2")
    ('openai/gsm8k', 'aha/arith')
    """
    name = task.split("-l")[0] if task.startswith("arith") else task
    spec = TASKS.get(name)
    return spec.hub[0] if spec and spec.hub else f"aha/{name}"


def _eval_results(results: RunResults, recipe: Recipe, kind: str) -> list[Any]:
    """The model index: each task's strict accuracy before and after (the evaluated adapter),
    and this export's own, measured by verify-export on the files as shipped."""
    from huggingface_hub import EvalResult

    after = results.evaluations.get(EVAL_AFTER.name, {})
    before = results.evaluations.get(EVAL_BEFORE.name, {})
    out = []
    for task, r in after.items():
        if task.endswith(SAMPLED_SUFFIX) or names.pass_at(1, "strict") in r:
            continue
        for stage, metrics in (("after", r), ("before", before.get(task))):
            if metrics:
                out.append(EvalResult(task_type="text-generation", dataset_type=_dataset_id(task), dataset_name=task,
                                      metric_type="accuracy", metric_name=f"strict accuracy {stage} ({recipe.name})",
                                      metric_value=round(metrics[names.accuracy("strict")], 4)))
    measured = export_measured(results, kind)
    if measured:
        task, m = measured
        out.append(EvalResult(task_type="text-generation", dataset_type=_dataset_id(task), dataset_name=task,
                              metric_type="accuracy", metric_name=f"strict accuracy of this {kind}, first "
                              f"{m['problems']} problems (verify-export)", metric_value=round(m["strict_export"], 4)))
    return out


def export_measured(results: RunResults, kind: str) -> tuple[str, dict[str, Any]] | None:
    """(task, verify-export's measurement) of the export ``kind`` as shipped, if it was verified."""
    v = results.verification
    if not v or kind not in v.get("artifacts", {}):
        return None
    return v["task"], v["artifacts"][kind]


def _datasets(recipe: Recipe) -> list[str]:
    used = [recipe.data.task, recipe.sft.task or recipe.data.task] + [t.task for t in recipe.eval.tasks]
    return sorted({TASKS[t].hub[0] for t in used if t in TASKS and TASKS[t].hub})


def card_text(results: RunResults, recipe: Recipe, versions: dict[str, str], kind: str, stages: list[str]) -> str:
    """The card's body: what was done (``stages``: the run's, in order), the evidence, how to
    reproduce and load it."""
    rewards = ", ".join(f"`{r.name}` x {r.weight:g}" for r in recipe.grpo.rewards)
    g, s = recipe.grpo.args, recipe.sft.args
    lines = [f"# {recipe.name}", "",
             f"A LoRA adapter (rank {recipe.lora.r}) for `{recipe.model.name}`, trained by "
             f"[aha](https://github.com/aha-recipes/aha) in {len(stages)} stages: {' -> '.join(stages)}. "
             f"{'These are the merged weights.' if kind == 'merged' else ''}".strip(), "",
             "## How it was trained", "",
             f"- Format: `{recipe.format}`; rewards ({recipe.grpo.reward_mode} mode): {rewards}."]
    if recipe.sft.enabled:
        lines.append(f"- SFT format warmup: {recipe.sft.num_examples} worked solutions, {s.num_train_epochs:g} "
                     f"epoch{'s' if s.num_train_epochs != 1 else ''}, learning rate {s.learning_rate:g}.")
    if recipe.grpo.enabled and recipe.grpo.trainer == "rft":
        lines.append(f"- Rejection-sampling fine-tuning in GRPO's place: {recipe.rft.rounds} rounds of "
                     f"{g.num_generations} completions per prompt at temperature {g.temperature:g}, prompts: "
                     f"{recipe.grpo.select}.")
    elif recipe.grpo.enabled:
        lines.append(f"- GRPO: {g.max_steps} steps, {g.num_generations} completions per prompt, learning rate "
                     f"{g.learning_rate:g}, loss {g.loss_type}, beta {g.beta:g}, temperature {g.temperature:g}, "
                     f"prompts: {recipe.grpo.select}.")
    lines += ["", "## Evidence", "", "Held-out problems, before and after, paired by problem (the run's report has "
              "every number)."] + result_tables(results)
    measured = export_measured(results, kind)
    if measured:
        task, m = measured
        lines += ["", f"**{'These weights' if kind == 'merged' else 'This adapter'}, measured as shipped** (loaded "
                  f"from these files in a fresh process, first {m['problems']} problems of `{task}`): strict "
                  f"{m['strict_export']:.1%}, against {m['strict_adapter']:.1%} for the evaluated adapter on the same "
                  f"problems; {m['identical_texts']} of {m['problems']} answers the same text, {m['same_verdicts']} "
                  "the same verdict."]
    if results.grpo_log:
        lines += ["", f"![rewards during GRPO]({CARD_CURVES})"]
    if results.rft:
        from ..training.rft import to_markdown as rft_markdown

        lines += ["", "## Rejection-sampling fine-tuning", ""] + rft_markdown(results.rft)
    if results.preflight:
        lines += ["", "## GRPO preflight", ""] + [f"- {v['level']} ({v['code']}): {v['message']}"
                                                  for v in results.preflight["verdicts"]]
    if results.verification:
        lines += ["", "## Export verification", "", verification_text(results.verification)]
    lines += ["", "## Reproduce", "", f"`{CARD_RECIPE}` beside this card is the recipe as run:", "", "```bash",
              f"pip install aha-recipes && aha run {CARD_RECIPE} --out runs/{recipe.name}", "```", "",
              "## Load it", "", "```python"]
    if kind == "merged":
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  "model = AutoModelForCausalLM.from_pretrained(\"THIS_FOLDER_OR_REPO\")",
                  "tokenizer = AutoTokenizer.from_pretrained(\"THIS_FOLDER_OR_REPO\")"]
    else:
        lines += ["from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
                  f"base = AutoModelForCausalLM.from_pretrained(\"{recipe.model.name}\")",
                  "model = PeftModel.from_pretrained(base, \"THIS_FOLDER_OR_REPO\")", "",
                  "# vLLM: the base model, this adapter named in each request",
                  "from vllm import LLM", "from vllm.lora.request import LoRARequest", "",
                  f"llm = LLM(model=\"{recipe.model.name}\", enable_lora=True, max_lora_rank={recipe.lora.r})",
                  "llm.generate(prompts, lora_request=LoRARequest(\"aha\", 1, \"THIS_FOLDER\"))"]
    lines += ["```", "", "Ask as the recipe asked: the format's system prompt and prefill (`aha formats "
              f"{recipe.format}` shows them).", "", "## Versions", "", "```",
              yaml.safe_dump(versions, sort_keys=False).strip(), "```"]
    return "\n".join(lines) + "\n"


def write_card(folder: Path, results: RunResults, recipe: Recipe, versions: dict[str, str], kind: str,
               stages: list[str]) -> Path:
    from huggingface_hub import ModelCard, ModelCardData

    base, license_ = base_origin(recipe)
    reward_tags = sorted({r.name for r in recipe.grpo.rewards}) if recipe.grpo.enabled else []
    data = ModelCardData(
        base_model=base, library_name="peft" if kind == "adapter" else "transformers", pipeline_tag="text-generation",
        tags=["aha", "reasoning", "lora"] + (["sft"] if recipe.sft.enabled else []) +
        ([recipe.grpo.trainer] if recipe.grpo.enabled else []) + [f"format-{recipe.format}"] + reward_tags,
        datasets=_datasets(recipe) or None, license=license_ or "other",
        license_name=None if license_ else "unknown", model_name=recipe.name,
        eval_results=_eval_results(results, recipe, kind) or None)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + card_text(results, recipe, versions, kind, stages))
    path = folder / "README.md"
    card.save(path)
    return path


def publish_stage(ctx: Context) -> dict[str, Any]:
    from aha.eval.runner import versions

    results = ctx.results()
    exports = ctx.run.state["stages"][EXPORT.name]
    done: dict[str, Any] = {}
    for kind in ("adapter", "merged"):
        if exports.get(kind):
            folder = Path(exports[kind])
            shutil.copyfile(ctx.run.path(RECIPE_FILE), folder / CARD_RECIPE)
            if results.grpo_log:
                reward_curves(results.grpo_log, folder / CARD_CURVES)
            done[f"{kind}_card"] = str(write_card(folder, results, ctx.recipe, versions(), kind,
                                                     plan(ctx.stages, ctx.recipe)))
    if ctx.recipe.export.push_to_hub:
        done["hub"] = push_folder(Path(exports["adapter"]), ctx.recipe.export.push_to_hub)
    return done



PUBLISH = Stage("publish", "the model card (the Hub's format, with the evidence) in the exported folders, and the hub "
                "upload when the recipe asks", publish_stage,
                writes=tuple(f"{EXPORT.name}/{kind}/{name}" for kind in ("adapter", "merged")
                             for name in ("README.md", CARD_RECIPE, CARD_CURVES)),
                enabled=trains, reads=("name",), needs_model=False)
