"""Reliability: every value checked before anything loads, malformed files as one line, one
writer per folder, and verdicts bounded in time whatever the completion holds."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aha.recipes.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-qwen3-smoke.yaml"


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("aha: error:") and not any("Traceback" in line for line in err), err[-3:]
    return err[-1]


# ----- values -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value,message", [
    ("--temperature", "-1", "temperature must be >= 0"), ("--temperature", "nan", "temperature must be >= 0"),
    ("--top-p", "0", "top_p must be > 0 and <= 1"), ("--top-p", "1.5", "top_p must be > 0 and <= 1"),
    ("--top-k", "-3", "top_k must be >= 0"), ("--min-p", "1", "min_p must be >= 0 and < 1"),
])
def test_eval_sampling_values_are_checked_before_anything_loads(flag, value, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--model", "builtin:tiny-qwen3", "--task", "arith", "--limit", "2", flag, value,
                 "--out", str(out)]) == 2
    assert message in _error(capsys) and not out.exists()


def test_yaml_boolean_words_are_words_as_yaml_1_2_says(capsys):
    from aha.recipes import RecipeError, load_recipe

    assert load_recipe(SMOKE, ["grpo.preflight=off"]).grpo.preflight == "off"
    assert load_recipe(SMOKE, ["grpo.select=all", "grpo.preflight=off"]).grpo.preflight == "off"
    assert load_recipe(SMOKE, ["model.use_vllm=false"]).model.use_vllm is False
    with pytest.raises(RecipeError, match=r"^model.use_vllm: expected true or false, got str 'no' \(YAML 1.2: only "):
        load_recipe(SMOKE, ["model.use_vllm=no"])  # a boolean field is not guessed from a word
    assert main(["run", str(SMOKE), "--dry-run", "--set", "grpo.preflight=yes"]) == 2
    assert "grpo.preflight must be one of stop, warn, off, not 'yes'" in _error(capsys)


def test_out_naming_a_file_says_what_to_do(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["run", str(SMOKE), "--out", str(a_file)]) == 2
    assert "that is a file, not a folder" in _error(capsys)
    assert main(["eval", "--model", "builtin:tiny-qwen3", "--task", "arith", "--out", str(a_file)]) == 2
    assert "that is a file, not a folder" in _error(capsys)
    assert a_file.read_text() == "x"


# ----- malformed files -------------------------------------------------------------------------------------------
def _adapter_with(tiny_adapter, folder, name, damage) -> Path:
    """A copy of the tiny adapter in ``folder`` whose file ``name`` holds ``damage(its bytes)``."""
    import shutil

    shutil.copytree(tiny_adapter, folder)
    (folder / name).write_bytes(damage((folder / name).read_bytes()))
    return folder


def _run_folder_error(folder, state_text, capsys) -> str:
    """The error line of ``aha run`` on a run folder whose state.json holds ``state_text``."""
    folder.mkdir()
    (folder / "state.json").write_text(state_text)
    assert main(["run", str(SMOKE), "--out", str(folder)]) == 2
    return _error(capsys)


def test_malformed_files_are_one_line(tmp_path, capsys, tiny_adapter):
    broken = _adapter_with(tiny_adapter, tmp_path / "adapter", "adapter_config.json", lambda _: b'{"r": 8, ')
    base = ["eval", "--model", "builtin:tiny-qwen3", "--task", "arith", "--limit", "2"]
    assert main(base + ["--adapter", str(broken), "--out", str(tmp_path / "o1")]) == 2
    assert "adapter_config.json: not valid JSON" in _error(capsys)
    parquet = tmp_path / "data.parquet"
    parquet.write_text("question,answer\n1+1,2\n")
    assert main(["eval", "--model", "builtin:tiny-qwen3", "--task", "gsm8k", "--data", str(parquet),
                 "--out", str(tmp_path / "o2")]) == 2
    assert "data.parquet: not a readable Parquet file" in _error(capsys)
    # A run folder whose state.json was cut short: the message says what it is and what to do.
    err = _run_folder_error(tmp_path / "run", '{"stages": {"eval-before": ', capsys)
    assert "state.json: not valid JSON" in err and "delete the folder" in err
    # An evaluation folder whose fingerprint is not JSON.
    out = tmp_path / "o3"
    out.mkdir()
    (out / "samples.jsonl").write_text(json.dumps({"id": "arith-l1-s0-0", "question": "q", "answer": "1",
                                                   "samples": [{"text": "1", "strict": True, "lenient": True,
                                                                "format_ok": True}]}) + "\n")
    (out / "fingerprint.json").write_text("not json")
    assert main(base + ["--out", str(out)]) == 2
    assert "fingerprint.json: not valid JSON" in _error(capsys)


# ----- one writer per folder ---------------------------------------------------------------------------------------
def _aha(*args):
    return [sys.executable, "-c", "import sys; from aha.recipes.cli import main; sys.exit(main())", *args]


def test_one_writer_per_folder_and_a_dead_holders_lock_is_taken_over(tmp_path, kill_points):
    out = tmp_path / "ev"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = ["eval", "--model", "builtin:tiny-qwen3", "--task", "arith", "--limit", "24", "--max-new-tokens", "48",
            "--batch-size", "1", "--out", str(out)]
    first = kill_points.paused_at("lines:1", tmp_path / "reached", ["-c", kill_points.aha_main, *args], env)  # it holds the lock, writing
    try:
        second = subprocess.run(_aha(*args), env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"aha: error: {out} is in use by another aha process (pid {first.pid}): wait for it to end, or write "
            "somewhere else with --out")
    finally:
        kill_points.kill(first, tmp_path / "reached")  # SIGKILL: no chance to release anything
    done = subprocess.run(_aha(*args), env=env, capture_output=True, text=True, timeout=600)  # resumes
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"took over the lock of pid {first.pid}, which is no longer running" in done.stderr
    assert len((out / "samples.jsonl").read_text().splitlines()) == 24


def test_a_run_folder_has_one_writer(tmp_path):
    from aha.eval.files import FolderLock
    from aha.formats import InputError
    from aha.recipes import load_recipe
    from aha.recipes.stages.runner import run_recipe

    with FolderLock(tmp_path / "run"):
        with pytest.raises(InputError, match="is in use by another aha process"):
            run_recipe(load_recipe(SMOKE), tmp_path / "run")


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    from aha.eval.files import LOCK_FILE, FolderLock

    (tmp_path / LOCK_FILE).write_text("999999")  # a pid no process has: its holder died with the lock
    with FolderLock(tmp_path) as lock:
        assert lock.taken_over == 999999
    with FolderLock(tmp_path) as lock:
        assert lock.taken_over is None  # a clean release leaves no holder behind


# ----- verdicts bounded in time ---------------------------------------------------------------------------------
PATHOLOGICAL = [r"9!!!!", r"100!!", r"(10!)!", r"10^{10^{10}}", r"(9^9)^(9^9)", r"2^3^4", r"9^{99999}", r"12345!",
                r"\sum_{i=1}^{10^{9}} i"]
SLOW_FOR_SYMPY = [r"(1+x)^{999}", "(" * 100 + "1" + ")" * 100, r"\binom{100000}{50000}"]


def _megabyte_completions():
    mb = 1_000_000
    return {"plain": "x" * mb, "tags": "<SOLUTION>1</SOLUTION>" * (mb // 22), "boxed": r"\boxed{1}" * (mb // 9),
            "open boxes": r"\boxed{" * (mb // 7), "answer lines": "Answer: 1\n" * (mb // 10),
            "numbers": "1,234 " * (mb // 6), "fractions": r"\frac{1}{2}" * (mb // 11)}


def test_known_pathological_answers_get_a_verdict_at_once():
    from aha.rewards import math_equal

    for answer in PATHOLOGICAL:
        for gold, guess in (("34", answer), (answer, "34"), (answer, answer)):
            started = time.perf_counter()
            math_equal(gold, guess)
            assert time.perf_counter() - started < 0.05, (gold, guess)


def test_every_verdict_is_bounded_on_any_thread():
    """Answers sympy would compute on for seconds or minutes: the helper process is stopped at
    its limit, so each verdict ends within 2 x LIMIT_SECONDS plus a helper restart."""
    from aha.rewards import math_equal
    from aha.rewards.mathverify import LIMIT_SECONDS

    bound = 2 * LIMIT_SECONDS + 2.0
    for answer in SLOW_FOR_SYMPY:
        for gold, guess in (("34", answer), (answer, "3")):
            for on_thread in (False, True):
                out: list = []
                started = time.perf_counter()
                if on_thread:
                    worker = threading.Thread(target=lambda: out.append(math_equal(gold, guess)))
                    worker.start()
                    worker.join()
                else:
                    out.append(math_equal(gold, guess))
                assert time.perf_counter() - started < bound, (gold, guess, on_thread)
                assert out[0] is not True
    assert math_equal(r"\frac{1}{2}", "0.5") and math_equal("x+1", "1+x")  # the helper still answers afterwards


def test_megabyte_completions_are_read_in_linear_time():
    from aha.eval import grade
    from aha.formats import FORMATS
    from aha.rewards import LAYERS, get_reward

    for name, text in _megabyte_completions().items():
        for fmt in FORMATS.values():
            started = time.perf_counter()
            grade(text, "34", fmt)
            for layer in LAYERS:
                try:
                    fn = get_reward(layer, format=fmt)
                except ValueError:
                    continue  # a layer that needs answer tags, on a format without them
                fn([text], answer=["34"])
            assert time.perf_counter() - started < 5.0, (name, fmt.name)  # all layers and grade, one megabyte


def test_a_damaged_checkpoint_is_skipped_for_the_one_before(tmp_path, caplog):
    import logging

    import torch

    from aha.recipes.training.trainers import last_checkpoint

    for step in (2, 4):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        torch.save({"state": torch.ones(64)}, folder / "optimizer.pt")
    newest = tmp_path / "checkpoints" / "checkpoint-4" / "optimizer.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # cut short, as a full disk leaves it
    with caplog.at_level(logging.WARNING, logger="aha"):
        assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "checkpoint-2")
    assert any("optimizer.pt is unreadable" in r.getMessage() for r in caplog.records)


def test_damaged_model_files_and_state_are_one_line(tmp_path, capsys, tiny_adapter):
    broken = _adapter_with(tiny_adapter, tmp_path / "adapter", "adapter_model.safetensors", lambda data: data[:64])
    assert main(["eval", "--model", "builtin:tiny-qwen3", "--task", "arith", "--limit", "2", "--adapter", str(broken),
                 "--out", str(tmp_path / "o")]) == 2
    assert "its model files could not be loaded" in _error(capsys)
    assert "state.json: not the state of a run" in _run_folder_error(tmp_path / "run", '{"stages": 5}', capsys)


def test_a_distributed_state_whose_group_is_gone_is_wiped_before_the_next_trainer():
    """A vLLM engine in colocate mode leaves accelerate's state saying "multi-CPU"; once the
    engine's process group is gone, the next Trainer in the same process (a notebook's second
    recipe) would wait at a barrier of a group that no longer exists."""
    import torch.distributed as dist
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    from aha.recipes.training.trainers import _allow_another_accelerator

    assert not dist.is_initialized()
    saved = dict(PartialState._shared_state)
    PartialState._shared_state["distributed_type"] = DistributedType.MULTI_CPU
    try:
        _allow_another_accelerator()
        assert PartialState._shared_state == {}
    finally:
        PartialState._shared_state.update(saved)


def test_an_export_that_cannot_be_loaded_is_named_in_one_line(tmp_path):
    """verify-export runs every export's `aha eval` in one fresh process: when one of them
    cannot load, the error names that export and gives the command's own one-line reason."""
    from aha.recipes.config.schema import RecipeError
    from aha.recipes.stages.verify import _fresh_evals

    missing = tmp_path / "merged"
    commands = {"export/adapter": ["formats"],
                "export/merged": ["eval", "--model", str(missing), "--task", "arith", "--out", str(tmp_path / "out")]}
    with pytest.raises(RecipeError) as err:
        _fresh_evals(commands)
    message = str(err.value)
    assert message.startswith("verify-export: export/merged could not be loaded and evaluated as a user would: aha: error:")
    assert str(missing) in message and "\n" not in message


def test_the_terminal_log_follows_stderr_when_it_is_replaced(tmp_path, monkeypatch):
    """A notebook cell or a test replaces sys.stderr after a run set up its logging, and closes
    the old one: the next line goes to the stderr in place, not to a closed stream."""
    import io
    import logging

    from aha.recipes.stages.runner import _setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log = logging.getLogger("aha")
    try:
        _setup_logging(tmp_path)
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        log.info("after the swap")
    finally:
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)
    assert second.getvalue().rstrip().endswith("INFO after the swap") and "Logging error" not in second.getvalue()
