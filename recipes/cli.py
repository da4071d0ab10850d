"""The ``aha`` command. Bad input ends in one clear line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from aha.formats import InputError
from aha.rewards.references import USER_CODE_TIMEOUT, USER_CODE_TIMEOUT_MAX


class UsageError(InputError):
    """A problem with the command line: shown as one line, no traceback."""


def _read_text_arg(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        return path.read_text(encoding="utf-8")
    # A shell cannot easily pass a newline: "\n" and "\t" in the argument stand for them (nothing else is decoded,
    # so non-ASCII text stays as typed).
    return value.replace("\\n", "\n").replace("\\t", "\t")


def cmd_rewards_explain(args: argparse.Namespace) -> int:
    from aha.rewards.explain import explain, format_table

    rows = explain(_read_text_arg(args.completion), answer=args.answer, format=args.format,
                   mode=args.mode, eos_token=args.eos_token, all_layers=args.all, rewards=tuple(args.reward))
    print(format_table(rows))
    return 0


def cmd_rewards_list(args: argparse.Namespace) -> int:
    from aha.rewards import LAYERS, PUBLISHED_NAMES

    published = {v: k for k, v in PUBLISHED_NAMES.items()}
    for name, fn in LAYERS.items():
        first_line = (fn.__doc__ or "").strip().splitlines()[0]
        alias = f" (faithful name: {published[name]})" if name in published else ""
        print(f"{name}{alias}\n    {first_line}")
    print("reward_model\n    a sequence-classification model scores question + completion (options: model, normalize, "
          "batch_size, max_length, label)\nyour own function\n    path/to/file.py:fn or package.module:fn, called as "
          "TRL calls a reward (importing it runs the file)")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .config.load import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=1))
    return 0


def cmd_formats(args: argparse.Namespace) -> int:
    from aha.formats import FORMATS, get_format

    if args.name:
        fmt = get_format(args.name)
        print(f"name: {fmt.name}\nanswer style: {fmt.answer_style}\nprefill: {fmt.prefill!r}\n"
              f"enable_thinking: {fmt.enable_thinking}\nsystem prompt:\n  {fmt.system_prompt}\n"
              f"example completion:\n  {fmt.render_completion('17 + 17 = 34', '34')!r}")
        return 0
    for fmt in FORMATS.values():
        print(f"{fmt.name:<8} {fmt.render_response('...', 'N')!r}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from aha.eval import Sampling, load_task
    from aha.eval.backends import check_adapter_folder
    from aha.eval.files import FolderLock
    from aha.eval.grading import test_grader
    from aha.rewards import set_user_code_timeout
    from aha.eval.runner import check_resumable
    from aha.eval.tasks import longest_first, read_task_file
    from aha.formats import get_format

    from .config.machine import resolve_dtype
    from .config.schema import SEED_MAX, ModelConfig
    from .config.validate import check_model_exists

    set_user_code_timeout(args.user_code_timeout)
    fmt = get_format(args.format)  # check cheap arguments before any model loads
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                        top_k=args.top_k, min_p=args.min_p, n=args.n, seed=args.seed)
    check_out_folder(args.out, results=True)
    if not 0 <= args.seed <= SEED_MAX:
        raise UsageError(f"--seed must be >= 0 and <= {SEED_MAX}, not {args.seed}")
    task = read_task_file(args.task) if args.task.endswith((".yaml", ".yml")) else args.task  # yours, as data
    problems = load_task(task, path=args.data, seed=args.seed, level=args.level, hub=args.hub,
                         n=args.limit or 200)
    if args.limit and args.limit > len(problems):
        raise UsageError(f"--limit {args.limit}: {args.task} has {len(problems)} problems (use --limit {len(problems)} "
                         "or none for all), so the summary never claims more than were evaluated")
    problems = longest_first(problems, args.limit) if args.longest else problems[:args.limit] if args.limit else problems
    try:
        check_model_exists(ModelConfig(name=args.model, gguf_file=args.gguf_file), None)
    except ValueError as err:
        raise UsageError(str(err).replace("model.name: ", "--model: ").replace("model.gguf_file: ", "--gguf-file: "))
    check_context(args.model, args.gguf_file, problems, fmt, args.max_new_tokens)
    test_grader(problems, f"--task {args.task}")  # your grader, on its own gold, before the model loads
    adapters = args.adapter or [None]
    for adapter in args.adapter or []:
        check_adapter_folder(adapter)
    if args.backend == "vllm" and args.gguf_file:
        raise UsageError("--gguf-file is read by the hf backend only; convert it first (aha eval --model builtin:... "
                         "prepares the demo model as a folder) or use --backend hf")
    if args.backend == "hf" and len(adapters) > 1:
        raise UsageError("the hf backend takes one --adapter per run; use --backend vllm for several")
    dtype = resolve_dtype(args.dtype)  # one precision for both backends, so they give the same answers
    meta = {"model": args.model, "task": args.task, "data": args.data, "limit": args.limit, "seed": args.seed,
            "dtype": dtype}
    runs = [(sampling, "")] + ([(Sampling(max_new_tokens=args.max_new_tokens), "greedy")] if sampling.n > 1 else [])
    for adapter in adapters:  # an --out holding another evaluation is refused before any model loads
        for how, sub in runs:
            out = Path(args.out) / (Path(adapter).name if adapter and len(adapters) > 1 else "") / sub
            check_resumable(out, problems, fmt, how, args.backend, adapter, {**meta, "adapter": adapter})
    lock = FolderLock(args.out).acquire()  # one writer per results folder, for this command's whole life
    if lock.taken_over:
        print(f"aha: took over the lock of pid {lock.taken_over}, which is no longer running", file=sys.stderr)
    try:
        return _evaluate_all(args, problems, fmt, runs, adapters, dtype, meta)
    finally:
        lock.release()


def _evaluate_all(args: argparse.Namespace, problems: list, fmt, runs: list, adapters: list, dtype: str,
                  meta: dict) -> int:
    from aha.eval import HFBackend, VLLMBackend, evaluate, load_model
    from aha.eval import metrics as names

    from .config.schema import ModelConfig
    from .training.models import prepare_base

    if args.model.startswith("builtin:"):  # the same offline models recipes use, prepared once in a cache folder
        args.model = prepare_base(ModelConfig(name=args.model), _cache_dir() / args.model.split(":", 1)[1])
    if args.backend == "vllm":
        backend = VLLMBackend(args.model, dtype=dtype, **vllm_engine_size(args.model, problems, fmt, runs[0][0],
                                                                          args.adapter))
    for adapter in adapters:
        if args.backend == "hf":
            model, tokenizer = load_model(args.model, adapter=adapter, gguf_file=args.gguf_file, dtype=dtype)
            backend = HFBackend(model, tokenizer, batch_size=args.batch_size)
        for how, sub in runs:
            out = Path(args.out) / (Path(adapter).name if adapter and len(adapters) > 1 else "") / sub
            summary = evaluate(backend, problems, out, fmt, how, adapter=adapter if args.backend == "vllm" else None,
                               meta={**meta, "adapter": adapter})  # a sampled batch shrinks by its samples there
            r, k = summary["results"], how.n
            if k > 1:
                low, high = r[names.interval(names.pass_at(1, "strict"))]
                print(f"{adapter or args.model}: avg@{k} strict {r[names.pass_at(1, 'strict')]:.1%} [95% CI "
                      f"{low:.1%}, {high:.1%}]  pass@{k} {r[names.pass_at(k, 'strict')]:.1%}  maj@{k} "
                      f"{r[names.maj_at(k)]:.1%}  -> {out}")
            else:
                print(f"{adapter or args.model}: {'greedy ' if sub else ''}strict {r['accuracy_strict']:.1%}  lenient "
                      f"{r['accuracy_lenient']:.1%}  math-verify {r['accuracy_math_verify']:.1%}  format "
                      f"{r['format_compliance']:.1%}  truncated {r['truncation_rate']:.1%}  -> {out}")
    return 0


def vllm_engine_size(model: str, problems: list, fmt, sampling, adapters: list[str] | None) -> dict:
    """Engine settings sized to this evaluation rather than vLLM's defaults: the LoRA rank
    of the adapters given (not 64) and a maximum length of the longest prompt plus
    max_new_tokens (not the model's 8k context). On a CPU both decide the speed: a 4x
    larger LoRA buffer and a 16x longer KV cache cost minutes on the demo model."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from aha.eval.backends import adapter_rank, vllm_lora_rank

    tokenizer = AutoTokenizer.from_pretrained(model)
    longest = max((len(tokenizer(fmt.build_prompt(tokenizer, p.question, p.instruction), add_special_tokens=False).input_ids)
                   for p in problems), default=0)
    length = longest + sampling.max_new_tokens
    context = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
    if context and length > context:
        raise UsageError(f"the longest prompt ({longest} tokens) plus --max-new-tokens {sampling.max_new_tokens} "
                         f"is more than the model's context ({context} tokens)")
    size: dict = {"enable_lora": bool(adapters), "max_model_len": min(-(-length // 64) * 64, context or length)}
    if not torch.cuda.is_available():  # vLLM compiles the model first on a CPU: about 40 s the demo model never wins back
        size["enforce_eager"] = True
    if adapters:
        size["max_lora_rank"] = vllm_lora_rank([adapter_rank(a) for a in adapters])
    return size


def check_out_folder(out: str | None, results: bool = False) -> None:
    """An output folder must be named (an empty name would be the current folder) and be a
    folder (made if missing), not an existing file. ``results``: a folder ``aha eval`` writes
    must be new, empty or an evaluation's results already (its fingerprint.json, here or one
    level down), so nothing of the user's is overwritten."""
    from aha.eval.files import LOCK_FILE
    from aha.eval.runner import FINGERPRINT_FILE

    if out is not None and not str(out).strip():
        raise UsageError("--out is empty: name a folder for the results (it is created if missing)")
    folder = Path(out) if out else None
    if folder:
        long = next((part for part in folder.parts if len(part.encode()) > 255), None)
        if long:
            raise UsageError(f"--out: the name {long[:40]}... is longer than a file system allows (255 bytes)")
        existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
        if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: {existing} is not writable (read-only, or not yours); choose another folder")
    if folder and folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {out}: that is a file, not a folder; give a folder path (it is created if missing)")
    if results and folder and folder.is_dir():
        entries = [e for e in folder.iterdir() if e.name != LOCK_FILE]
        ours = (folder / FINGERPRINT_FILE).is_file() or any((e / FINGERPRINT_FILE).is_file() for e in entries
                                                               if e.is_dir())
        if entries and not ours:
            shown = ", ".join(sorted(e.name for e in entries)[:3])
            raise UsageError(f"--out {out} holds files aha did not write ({shown}{', ...' if len(entries) > 3 else ''}); "
                             "give a new or empty folder, or one an earlier `aha eval` wrote")


def check_context(model: str, gguf_file: str | None, problems: list, fmt, max_new_tokens: int) -> None:
    """The longest prompt plus ``max_new_tokens`` must fit the model's context (its config, read without
    weights; a model whose config cannot be read here is not checked): past it, generation runs on
    positions the model never saw, for as long as it is asked to."""
    from transformers import AutoTokenizer

    from .config.schema import BUILTIN_CONTEXT, ModelConfig
    from .config.validate import model_config
    from .training.models import tokenizer_only

    config = model_config(ModelConfig(name=model, gguf_file=gguf_file), None)
    limit = BUILTIN_CONTEXT.get(model) or (getattr(config, "max_position_embeddings", None) if config is not None else None)
    if not isinstance(limit, int) or max_new_tokens < limit // 2:
        return  # tokenizing every prompt is only worth it near the limit
    tokenizer = tokenizer_only(ModelConfig(name=model)) if model in BUILTIN_CONTEXT else AutoTokenizer.from_pretrained(model)
    if tokenizer is None:
        return
    longest = max(len(tokenizer(fmt.build_prompt(tokenizer, p.question, p.instruction), add_special_tokens=False)
                      ["input_ids"]) for p in problems)
    if longest + max_new_tokens > limit:
        raise UsageError(f"--max-new-tokens {max_new_tokens}: with the longest prompt ({longest} tokens) that passes "
                         f"{model}'s context of {limit} tokens; use at most {max(1, limit - longest)}")


def _cache_dir() -> Path:
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aha"


def cmd_compare(args: argparse.Namespace) -> int:
    from aha.eval.compare import write_pooled_report, write_report

    runs = args.runs
    if len(runs) % 2:
        raise UsageError(f"compare takes pairs of results folders, BEFORE AFTER [BEFORE AFTER ...]; got {len(runs)}")
    pairs = list(zip(runs[::2], runs[1::2]))
    check_out_folder(args.out)  # where the report goes: a writable folder
    for before, after in pairs:
        if Path(before).resolve() == Path(after).resolve():
            raise UsageError(f"compare {before} with itself: every problem would pair with its own answer; give the "
                             "evaluation before and the one after")
    if len(pairs) == 1:
        out = Path(args.out or pairs[0][1])
        write_report(*pairs[0], out, metric=args.metric, allow_mixed=args.allow_mixed)
        print((out / "compare.md").read_text(encoding="utf-8"), end="")
        return 0
    if not args.out:
        raise UsageError("several pairs are pooled into one report: say where with --out DIR")
    write_pooled_report(pairs, args.out, metric=args.metric, allow_mixed=args.allow_mixed)
    print((Path(args.out) / "pooled.md").read_text(encoding="utf-8") + f"-> {Path(args.out) / 'pooled.md'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .api import load_recipe, run
    from .config.machine import is_main
    from .config.trl_args import global_batch_line
    from .stages.table import REPORT, plan

    if not args.launch and (args.config or args.num_processes):
        raise UsageError("--config and --num-processes go with --launch accelerate")
    check_out_folder(args.out)
    if args.rehearse and (args.seeds or args.launch):
        raise UsageError("--rehearse runs one replicate on one process: drop --seeds and --launch")
    if args.seeds:
        return _run_seeds(args)
    if args.launch:
        args.config = args.config or "ddp"
        args.num_processes = args.num_processes or _gpu_count()
    processes = args.num_processes if args.launch else None
    # every check happens here, before any model loads (for the launch's processes when --launch)
    recipe = load_recipe(args.recipe, args.set, out=args.out, processes=processes, rehearse=args.rehearse)
    out = Path(args.out or Path("runs") / recipe.name)
    from .stages.runner import check_stage_names  # after load_recipe: Unsloth, when wanted, is imported before TRL

    check_stage_names(recipe, args.stop_after, args.restart_from)  # --dry-run and --launch too
    if args.launch:
        return _launch(args, recipe, out)
    if args.dry_run:
        from aha.formats import get_format

        from .config.schema import resolve_path
        from .config.validate import files_imported
        from .training.data import data_sources, rendered_examples
        from .training.models import tokenizer_only

        batch = f"; {global_batch_line(recipe, 1)}" if recipe.grpo.enabled else ""
        print(f"recipe {recipe.name} is valid; stages: {' -> '.join(plan(recipe))}; run directory: {out}{batch}")
        imported = files_imported(recipe)
        print("files of yours a run imports (their code runs): " + ("; ".join(imported) if imported else "none"))
        print("data: " + "; ".join(data_sources(recipe)))
        fmt = get_format(resolve_path(recipe.format, recipe.source_dir))
        tokenizer = tokenizer_only(recipe.model)
        if recipe.tasks:  # your own data: show what the model will see, so a wrong field shows before any training
            print("\n".join(rendered_examples(recipe, fmt, tokenizer)))
        print_lengths(recipe, fmt, tokenizer)
        return 0
    result = run(recipe, out, stop_after=args.stop_after, restart_from=args.restart_from)
    if is_main():
        print(f"run {recipe.name} finished: {out / 'report.md'}" if REPORT.name in result.stages else
              f"run {recipe.name} stopped after {args.stop_after}; re-run the same command to continue")
    return 0


def print_lengths(recipe, fmt, tokenizer) -> None:
    """Every length limit the run will meet (``training.lengths``): what fits, then each that does not;
    any that does not is the dry run's error."""
    from .config.schema import RecipeError
    from .training.lengths import evaluation_engine, length_report

    if tokenizer is None:
        print(f"lengths: not checked (no tokenizer for {recipe.model.name} here)")
        return
    fits, problems = length_report(recipe, fmt, tokenizer)
    print(f"lengths (evaluation on {evaluation_engine(recipe).name}):")
    print("\n".join(f"  fits: {line}" for line in fits) or "  nothing with a length limit")
    if problems:
        print("\n".join(f"  DOES NOT FIT: {line}" for line in problems))
        raise RecipeError(f"{len(problems)} length(s) do not fit (listed above); first: {problems[0]}")


def _run_seeds(args: argparse.Namespace) -> int:
    """``--seeds N``: the whole recipe N times with every seed moved, then pooled."""
    from .api import find_recipe, load_recipe
    from .seeds import parse_replicates, reseed, run_seeds

    if args.launch:
        raise UsageError("--seeds runs replicates one after another in this process; without --launch")
    replicates = parse_replicates(args.seeds)
    path = find_recipe(args.recipe)
    base = load_recipe(path, args.set, out=args.out)
    parent = Path(args.out or Path("runs") / f"{base.name}-seeds")
    if args.dry_run:
        for r in replicates:
            print(f"replicate {r}: {parent / f'replicate-{r}'}  --set " + " --set ".join(reseed(base, r)))
        return 0
    run_seeds(path, args.set, replicates, parent, stop_after=args.stop_after, restart_from=args.restart_from, base=base)
    print(f"{len(replicates)} replicates of {base.name}: {parent / 'seeds.md'}")
    return 0


def _gpu_count() -> int:
    import torch

    if not torch.cuda.is_available():
        raise UsageError("--launch accelerate on a machine without GPUs needs --num-processes N (CPU processes)")
    return torch.cuda.device_count()


def _launch(args: argparse.Namespace, recipe, out: Path) -> int:
    """``--launch accelerate``: run this same command on N processes through accelerate."""
    import shlex
    import subprocess

    from .launch.commands import accelerate_command
    from .stages.runner import STATE_FILE, Run

    run_args = [args.recipe, "--out", str(out)] + [f"--set={item}" for item in args.set]
    run_args += [f"--stop-after={args.stop_after}"] if args.stop_after else []
    run_args += [f"--from={args.restart_from}"] if args.restart_from else []
    command = accelerate_command(recipe, args.config, args.num_processes, run_args)
    if (out / STATE_FILE).is_file() and not args.restart_from:  # a run folder of another recipe: say so before launching
        Run.follow(recipe, out).check_same_recipe()
    if args.dry_run:
        print(shlex.join(command))
        return 0
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    _relay_stderr(proc.stderr)
    return proc.wait()


def _relay_stderr(stream) -> None:
    """Pass the launch's stderr through as it comes (progress bars included), except the
    launcher's own stack trace after a process has already said what went wrong in one line."""
    import os

    said, quiet = False, False
    while chunk := os.read(stream.fileno(), 65536):
        text = chunk.decode("utf-8", "replace")
        said = said or "aha: error:" in text or "aha: internal error:" in text
        if said and "Traceback (most recent call last)" in text:
            text, quiet = text.split("Traceback (most recent call last)")[0], True
        if text and not quiet:
            sys.stderr.write(text)
            sys.stderr.flush()


def cmd_vllm_serve(args: argparse.Namespace) -> int:
    """Start TRL's vLLM server for a recipe whose GRPO runs in server mode."""
    import shlex
    import subprocess

    from .api import load_recipe
    from .launch.commands import vllm_serve_command
    from .training.models import prepare_base

    recipe = load_recipe(args.recipe, args.set)
    if not (recipe.model.use_vllm and recipe.model.vllm_mode == "server"):
        raise UsageError(f"recipe {recipe.name} does not use a vLLM server: set model.use_vllm true and "
                         "model.vllm_mode server (also for the aha run that trains with it)")
    out = Path(args.out or Path("runs") / recipe.name)
    base = prepare_base(recipe.model, out) if recipe.model.name.startswith("builtin:") else recipe.model.name
    command = vllm_serve_command(recipe, str(base))
    if args.dry_run:
        print(shlex.join(command))
        return 0
    return subprocess.run(command, check=False).returncode


def cmd_preflight(args: argparse.Namespace) -> int:
    """Sample the policy GRPO would start from, as GRPO samples, and say whether GRPO can learn."""
    from aha.eval.backends import check_adapter_folder
    from aha.formats import get_format
    from aha.rewards import set_user_code_timeout

    from .api import find_recipe, load_recipe
    from .config.schema import resolve_path
    from .training.preflight import PREFLIGHT_FILE, check_verdicts, to_markdown
    from .stages.runner import _setup_logging
    from .stages.training import preflight
    from .training.backends import make_backend
    from .config.machine import pick_backend

    path = find_recipe(args.recipe)
    recipe = load_recipe(path, args.set)
    set_user_code_timeout(recipe.user_code_timeout)
    if args.adapter:
        check_adapter_folder(args.adapter)
    pick_backend(recipe.model.backend, recipe.model)
    check_out_folder(args.out)
    out = Path(args.out or Path("runs") / f"{recipe.name}-preflight")
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out)
    fmt = get_format(resolve_path(recipe.format, path.parent))
    backend = make_backend(recipe, out)
    try:
        report = preflight(recipe, fmt, backend, args.adapter, out)
    finally:
        backend.close()
    print("\n".join(to_markdown(report)).replace("preflight/preflight.png", str(out / "preflight.png")))
    check_verdicts(report, "stop" if recipe.grpo.preflight == "stop" else "warn", out / PREFLIGHT_FILE)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 < value <= USER_CODE_TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0 and at most {USER_CODE_TIMEOUT_MAX:g}, "
                                         f"not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from aha.eval.tasks import TASKS

    from .config.schema import EvalConfig, GRPOStage, ModelConfig, choices_of

    parser = argparse.ArgumentParser(prog="aha", description="Reasoning recipes: formats, rewards, eval, GRPO.")
    sub = parser.add_subparsers(dest="command", required=True)

    rewards = sub.add_parser("rewards", help="inspect the reward layers").add_subparsers(dest="action", required=True)
    explain = rewards.add_parser("explain", help="score one completion with every layer and say why")
    explain.add_argument("completion", help="the completion text, @FILE to read it from a file, or - for stdin")
    explain.add_argument("--answer", help="the gold answer (GSM8K '#### N' answers are fine)")
    explain.add_argument("--format", default="unsloth", help="format name or YAML file (default: unsloth)")
    explain.add_argument("--mode", default="default", choices=choices_of(GRPOStage, "reward_mode"))
    explain.add_argument("--eos-token", default="", help="the tokenizer's eos token (faithful Unsloth regex)")
    explain.add_argument("--all", action="store_true", help="every layer that applies, not just the recipe's")
    explain.add_argument("--reward", action="append", default=[], metavar="NAME",
                         help="also score with this reward: a layer, or your function as path/to/file.py:fn or "
                         "package.module:fn (importing it runs the file; repeatable)")
    explain.set_defaults(func=cmd_rewards_explain)
    rewards.add_parser("list", help="list the reward layers").set_defaults(func=cmd_rewards_list)

    ev = sub.add_parser("eval", help="evaluate a model (and LoRA adapters) on a task")
    ev.add_argument("--model", required=True, help="local folder or hub id")
    ev.add_argument("--adapter", action="append", help="LoRA adapter folder (repeat for several with vllm)")
    ev.add_argument("--gguf-file", help="GGUF file name inside --model (hf backend)")
    ev.add_argument("--task", required=True, metavar="TASK",
                    help=f"{', '.join(TASKS)} (shipped: offline; arith generated), or your own task as a YAML file "
                    "(file or hub, the fields holding question and answer, grader; see README)")
    ev.add_argument("--data", help="local jsonl/json/csv/parquet in the task's fields (default: the shipped file, "
                    "else the hub)")
    ev.add_argument("--hub", action="store_true", help="read the task from the Hugging Face Hub, not the shipped file")
    ev.add_argument("--format", default="unsloth")
    ev.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    ev.add_argument("--limit", type=_positive_int)
    ev.add_argument("--longest", action="store_true", help="with --limit: the N problems with the longest questions, "
                    "not the first N (as a recipe's eval task with longest: true)")
    ev.add_argument("--level", type=int, default=1, help="arith difficulty (1-3)")
    ev.add_argument("--user-code-timeout", type=_positive_seconds, default=USER_CODE_TIMEOUT,
                    help="seconds one call of your grader may take (a recipe's user_code_timeout)")
    ev.add_argument("--max-new-tokens", type=_positive_int, default=512)
    ev.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    ev.add_argument("--top-p", type=float, default=1.0)
    ev.add_argument("--top-k", type=int, default=0, help="0: off")
    ev.add_argument("--min-p", type=float, default=0.0, help="0: off")
    ev.add_argument("--n", type=_positive_int, default=1,
                    help="samples per problem: avg@k with its 95%% interval, pass@k, maj@k (and greedy in OUT/greedy)")
    ev.add_argument("--batch-size", type=_positive_int, default=16)
    ev.add_argument("--dtype", default="auto", choices=choices_of(ModelConfig, "dtype"),
                    help="auto: float32 on a CPU, bfloat16 on Ampere and newer, float16 on older GPUs (both backends)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", required=True, help="results folder (re-running resumes)")
    ev.set_defaults(func=cmd_eval)

    cmp = sub.add_parser("compare", help="paired before/after report of two eval runs (several pairs: pooled)")
    cmp.add_argument("runs", nargs="+", metavar="BEFORE AFTER",
                     help="results folders in pairs; several pairs (say one per seed) are also pooled")
    cmp.add_argument("--metric", default="lenient", choices=choices_of(EvalConfig, "metric"))
    cmp.add_argument("--out", help="report folder (default: the AFTER folder; needed for several pairs)")
    cmp.add_argument("--allow-mixed", action="store_true",
                     help="pair evaluations of two engines (--backend), lengths (--max-new-tokens) or graders; said "
                          "in the report")
    cmp.set_defaults(func=cmd_compare)

    run = sub.add_parser("run", help="run a recipe: eval -> SFT -> GRPO -> eval -> compare -> export")
    run.add_argument("recipe", help="recipe YAML file, or the name of a shipped recipe")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a recipe value, e.g. --set grpo.max_steps=5 (repeatable)")
    run.add_argument("--out", help="run directory (default: runs/<recipe name>); re-running resumes")
    run.add_argument("--dry-run", action="store_true", help="validate the recipe and print the stages")
    run.add_argument("--stop-after", help="stop after this stage (re-run to continue)")
    run.add_argument("--rehearse", action="store_true",
                     help="rehearse a GPU recipe whole on this machine first: its model's twin, the counts cut, every "
                          "length, template and stage as the GPU run has them (into runs/<recipe>-rehearsal)")
    run.add_argument("--launch", choices=["accelerate"],
                     help="run on several processes through accelerate launch (training on all, the rest on one)")
    run.add_argument("--config", help="with --launch: ddp (default), zero2, zero3, fsdp2 (shipped accelerate "
                     "configs) or your own accelerate config file")
    run.add_argument("--num-processes", type=_positive_int,
                     help="with --launch: processes (default: one per GPU)")
    run.add_argument("--seeds", metavar="N|R1,R2",
                     help="run the whole recipe N times (or these replicates) with every seed moved, each into "
                          "OUT/replicate-R, and pool the comparisons across them into OUT/seeds.md")
    run.add_argument("--from", dest="restart_from", metavar="STAGE",
                     help="run this stage and every later one again, replacing their outputs (e.g. --from preflight "
                          "--set grpo.seed=2: GRPO again from the same warmup)")
    run.set_defaults(func=cmd_run)

    pre = sub.add_parser("preflight", help="will GRPO learn? sample the starting policy as GRPO would, before training")
    pre.add_argument("recipe", help="recipe YAML file, or the name of a shipped recipe")
    pre.add_argument("--adapter", help="LoRA adapter GRPO would start from (e.g. RUN/sft/adapter); default: the base model")
    pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    pre.add_argument("--out", help="folder for preflight.json and preflight.png (default: runs/<recipe>-preflight)")
    pre.set_defaults(func=cmd_preflight)

    serve = sub.add_parser("vllm-serve", help="start TRL's vLLM server for a recipe with model.vllm_mode server")
    serve.add_argument("recipe", help="recipe YAML file, or the name of a shipped recipe")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    serve.add_argument("--out", help="run directory (built-in models are prepared there)")
    serve.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    serve.set_defaults(func=cmd_vllm_serve)

    formats = sub.add_parser("formats", help="list the reasoning formats, or show one")
    formats.add_argument("name", nargs="?")
    formats.set_defaults(func=cmd_formats)
    sub.add_parser("schema", help="print the recipe's JSON schema (recipes/recipe.schema.json: editors complete and "
                   "check recipes with it)").set_defaults(func=cmd_schema)
    return parser


# Errors about the user's own files and folders (a missing path, a read-only --out) are theirs to fix.
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def main(argv: list[str] | None = None) -> int:
    """Mistakes in what the user gave (InputError: recipe, arguments, formats, data) and a
    stalled engine end in one line, exit 2. Anything else is a bug or a broken environment:
    during a run its traceback goes into the run's run.log and one line says where; elsewhere
    Python prints it."""
    from aha.eval.backends import EngineStalled

    from .launch.distributed import MainProcessFailed

    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    _close_run_log()  # a log left open by an earlier run in this process is not this command's
    try:
        try:
            return func(args)
        finally:
            _close_progress_bars()  # a bar left open (training stopped mid-step) would print itself after the error
    except (InputError, EngineStalled, MainProcessFailed, *_PATH_ERRORS) as err:
        print(f"aha: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aha: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, OSError) and err.errno in (errno.EROFS, errno.ENAMETOOLONG):
            _close_run_log()
            what = "a read-only file system" if err.errno == errno.EROFS else "a name longer than the file system allows"
            print(f"aha: error: {err.filename or 'the output'}: {what}; choose another folder", file=sys.stderr)
            return 2
        full = disk_full(err, _run_log_folder())
        if full is not None:
            _close_run_log()  # no traceback into a full disk
            print(f"aha: error: no space left on the device{f' writing {full}' if full else ''}: free some space and "
                  "re-run the same command, which resumes (finished stages, rows and checkpoints are kept)",
                  file=sys.stderr)
            return 2
        run_log = _close_run_log(err)
        if run_log is None:
            raise
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        print(f"aha: internal error: {type(err).__name__}: {first_line} (the traceback is in {run_log}; "
              "re-running the same command resumes)", file=sys.stderr)
        return 1


def disk_full(err: BaseException, folder: Path | None = None) -> str | None:
    """The file being written when ``err`` (or what caused it) was a full disk ("" when
    unnamed); None when it was something else. Some savers lose the OSError (torch's says
    only "file write failed"), so a write failure while ``folder``'s device has no room
    left counts too."""
    import errno
    import shutil

    chain: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    full = [e for e in chain if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)]
    if full:
        return next((str(e.filename) for e in full if e.filename), "")  # closing a file can re-raise it unnamed
    if any("No space left on device" in str(e) for e in chain):
        return ""
    if folder is not None and any("write" in str(e).lower() for e in chain) and shutil.disk_usage(folder).free < 2**20:
        return ""
    return None


def _close_progress_bars() -> None:
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _run_log_folder() -> Path | None:
    """The run folder whose run.log this process writes (None outside a run)."""
    import logging

    for handler in logging.getLogger("aha").handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename).parent
    return None


def _close_run_log(err: BaseException | None = None) -> Path | None:
    """Detach the run's log file; with ``err``, write its traceback there first."""
    import logging

    log, path = logging.getLogger("aha"), None
    for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        if err is not None:
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "stopped by an internal error",
                                          None, (type(err), err, err.__traceback__)))
            path = Path(handler.baseFilename)
        handler.close()
        log.removeHandler(handler)
    return path


if __name__ == "__main__":
    sys.exit(main())
