"""One recipe on several processes: `aha run --launch accelerate` (DDP over gloo on CPU here),
the shipped accelerate configs, the global batch, and TRL's vLLM server mode."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aha.recipes.cli import main
from aha.recipes.config.trl_args import global_batch

pytestmark = pytest.mark.xdist_group("launch")  # accelerate launches listen on one port: one launch at a time

SMOKE = ["tiny-qwen3-smoke", "--set", "grpo.max_steps=3", "--set", "eval.sampled_k=0", "--set",
         "eval.tasks=[{task: arith, level: 1, limit: 8, seed: 0}]"]
SMOKE_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-qwen3-smoke.yaml"
NO_VERIFY = ["--set", "export.verify=false"]  # verify-export under a launch runs in test_two_processes_end_to_end


def _launch(out, *extra):
    return [sys.executable, "-m", "aha.recipes.cli", "run", *SMOKE, "--out", str(out), "--launch", "accelerate",
            "--config", "ddp", "--num-processes", "2", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores


@pytest.mark.slow
def test_two_processes_end_to_end(tmp_path):
    """Training on both processes, everything else once: one report, one state, each
    evaluation written once, an adapter that loads, and twice the single-process batch."""
    out = tmp_path / "run"
    done = subprocess.run(_launch(out), capture_output=True, text=True, env=_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"]) == ["eval-before", "sft", "eval-after-sft", "preflight", "grpo", "eval-after",
                                     "compare", "export", "verify-export", "publish", "report"]
    assert state["stages"]["sft"]["steps"] == 2  # 16 examples / (2 processes x 4): half the single-process steps
    assert done.stdout.count("finished:") == 1 and (out / "report.md").is_file()
    for stage in ("eval-before", "eval-after-sft", "eval-after"):
        rows = [json.loads(line) for line in (out / stage / "arith-l1" / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == len({r["id"] for r in rows}) == 8  # written once, not once per process
    log = (out / "run.log").read_text()
    assert "launch: 2 processes" in log and "[rank 1]" not in log
    from aha.recipes.api import load_recipe

    single, _ = global_batch(load_recipe("tiny-qwen3-smoke"), 1)
    assert f"= {2 * single} completions" in log
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "base"), out / "grpo" / "adapter")
    assert any("lora_A" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"),
                                       ("fsdp2", "FSDP")])
def test_shipped_configs_are_accepted_by_accelerate(name, kind):
    """accelerate parses each shipped config as `accelerate launch` would, with our process count."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    from aha.recipes.launch.commands import accelerate_config

    args = launch_command_parser().parse_args(["--config_file", str(accelerate_config(name)), "--num_processes", "4",
                                               "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    assert defaults.distributed_type.value == kind and args.num_processes == 4
    if kind == "DEEPSPEED":
        assert defaults.deepspeed_config["zero_stage"] == int(name[-1])
    if kind == "FSDP":
        assert str(defaults.fsdp_config["fsdp_version"]) == "2"


def test_launch_command_line(capsys, tmp_path):
    out = tmp_path / "r"
    assert main(["run", *SMOKE, "--out", str(out), "--launch", "accelerate", "--config", "zero2",
                 "--num-processes", "4", "--dry-run"]) == 0
    line = capsys.readouterr().out.strip()
    assert "-m accelerate.commands.launch --quiet --config_file" in line and line.split("--config_file ")[1].split()[0].endswith(
        "zero2.yaml")
    assert "--num_processes 4 --mixed_precision no -m aha.recipes.cli run tiny-qwen3-smoke" in line
    assert f"--out {out}" in line
    assert "--set=grpo.max_steps=3" in line and not out.exists()


@pytest.mark.parametrize("argv,message", [
    (["--num-processes", "3", "--set", "grpo.num_generations=8"],
     "3 processes x per_device_train_batch_size 4 x gradient_accumulation_steps 1 = 12 completions, which do not split "
     "into groups of num_generations 8"),
    (["--config", "nope", "--num-processes", "2"], "--config nope: neither a shipped config"),
])
def test_bad_launch_is_one_line(argv, message, capsys, tmp_path):
    assert main(["run", "tiny-qwen3-smoke", "--out", str(tmp_path / "r"), "--launch", "accelerate", "--dry-run",
                 *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not (tmp_path / "r").exists()


def test_a_batch_valid_only_on_several_processes(capsys, tmp_path):
    """per device 4 and 8 generations: TRL refuses it on one process, and it is right on two."""
    assert main(["run", "tiny-qwen3-smoke", "--set", "grpo.num_generations=8", "--dry-run"]) == 2
    assert main(["run", "tiny-qwen3-smoke", "--set", "grpo.num_generations=8", "--out", str(tmp_path / "r"),
                 "--launch", "accelerate", "--num-processes", "2", "--dry-run"]) == 0


def test_vllm_server_mode(capsys, tmp_path):
    """The command `aha vllm-serve` builds from the recipe (built here without the CPU
    refusal), and the one-line refusals where server mode cannot work."""
    import dataclasses

    from aha.recipes.api import load_recipe
    from aha.recipes.launch.commands import vllm_serve_command

    recipe = load_recipe("tiny-qwen3-smoke")
    served = dataclasses.replace(recipe, model=dataclasses.replace(
        recipe.model, use_vllm=True, vllm_mode="server", vllm_server_host="10.0.0.2", vllm_server_port=8123,
        gpu_memory_utilization=0.8))
    command = vllm_serve_command(served, "/models/base")
    assert command[0].endswith("trl") and command[1] == "vllm-serve"
    assert command[2:] == ["--model", "/models/base", "--dtype", "float32", "--max_model_len", "512",
                           "--gpu_memory_utilization", "0.8", "--host", "10.0.0.2", "--port", "8123"]
    assert main(["vllm-serve", "tiny-qwen3-smoke", "--dry-run"]) == 2
    assert "does not use a vLLM server" in capsys.readouterr().err
    pytest.importorskip("vllm")
    assert main(["run", "tiny-qwen3-smoke", "--set", "model.use_vllm=true", "--set", "model.vllm_mode=server",
                 "--dry-run"]) == 2
    assert "model.vllm_mode server needs GPUs" in capsys.readouterr().err


def test_a_config_that_contradicts_the_precision_rule_is_refused(tmp_path, capsys):
    """The shipped configs name no mixed precision: aha passes the one its rule picks (no on a CPU).
    A config of the user's that names another, or that is not a mapping, is one line."""
    import yaml

    from aha.recipes.launch.commands import accelerate_config

    config = yaml.safe_load(accelerate_config("zero2").read_text())
    assert "mixed_precision" not in config
    config["mixed_precision"] = "bf16"
    mine = tmp_path / "zero2-bf16.yaml"
    mine.write_text(yaml.safe_dump(config))
    listed = tmp_path / "list.yaml"
    listed.write_text("- distributed_type: DEEPSPEED\n")
    for path, message in [(mine, "mixed_precision bf16 contradicts this run's precision (no"),
                          (listed, "an accelerate config is a mapping")]:
        assert main(["run", "tiny-qwen3-smoke", "--out", str(tmp_path / "run"), "--launch", "accelerate", "--config",
                     str(path), "--num-processes", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def _whole_adapter(adapter):
    import yaml
    from safetensors.torch import load_file

    weights = load_file(adapter / "adapter_model.safetensors")
    rank = yaml.safe_load(SMOKE_RECIPE.read_text())["lora"]["r"]
    assert weights and all(rank in tuple(w.shape) for w in weights.values())
    assert all(w.shape[0] * w.shape[1] > rank for w in weights.values())  # whole matrices, not a process's shard


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_on_cpu_processes(stage, tmp_path, kill_points):
    """DeepSpeed ZeRO-2 and ZeRO-3 with the shipped configs as a user runs them (unedited: aha
    passes the precision its rule picks, no on CPU processes), end to end: one report,
    evaluations once, whole adapters; ZeRO-3 is also killed during GRPO and resumed to the end."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "aha.recipes.cli", "run", *SMOKE, "--set", "grpo.max_steps=4", "--out", str(out),
               "--launch", "accelerate", "--config", stage, "--num-processes", "2", *NO_VERIFY]
    env = {**_env(), "DS_ACCELERATOR": "cpu"}
    if stage == "zero3":  # killed once GRPO's ranks have saved checkpoint 2 (every rank waits there: an event)
        marker = tmp_path / "reached"
        armed = {**env, "PYTHONPATH": kill_points.every_process(tmp_path / "site"), "KILL_POINT": "checkpoint:grpo",
                 "KILL_MARKER": str(marker)}
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=armed,
                                start_new_session=True)
        try:
            while not marker.is_file() and proc.poll() is None:
                time.sleep(0.5)
            assert proc.poll() is None and list((out / "grpo" / "checkpoints").glob("checkpoint-2")), \
                "GRPO ended without saving checkpoint 2"
        finally:
            kill_points.kill(proc, marker)  # the launcher's session and each rank (torch starts them in their own)
        assert "grpo" not in json.loads((out / "state.json").read_text())["stages"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["stages"]["grpo"]["steps"] == 4 and done.stdout.count("finished:") == 1
    for evaluation in ("eval-before", "eval-after-sft", "eval-after"):
        rows = (out / evaluation / "arith-l1" / "samples.jsonl").read_text().splitlines()
        assert len(rows) == len({json.loads(r)["id"] for r in rows}) == 8
    for adapter in (out / "sft" / "adapter", out / "grpo" / "adapter", out / "export" / "adapter"):
        _whole_adapter(adapter)
    if stage == "zero3":
        assert "resuming from" in (out / "run.log").read_text()


@pytest.mark.slow
def test_fsdp2_on_cpu_processes(tmp_path):
    """The shipped FSDP2 config, unedited, runs the recipe on CPU processes and saves whole
    adapters (not shards)."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "aha.recipes.cli", "run", *SMOKE, "--set", "grpo.max_steps=2", "--out", str(out),
               "--launch", "accelerate", "--config", "fsdp2", "--num-processes", "2", *NO_VERIFY]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    _whole_adapter(out / "grpo" / "adapter")


@pytest.mark.parametrize("argv,message", [
    (["--num-processes", "2"], "--config and --num-processes go with --launch accelerate"),
    (["--launch", "accelerate"], "needs --num-processes N"),
])
def test_launch_options_need_each_other(argv, message, capsys):
    assert main(["run", "tiny-qwen3-smoke", "--dry-run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_changed_recipe_is_refused_before_launching(tmp_path, capsys):
    """A run folder holding another recipe's finished stages: refused in one line by the
    command itself, before any process is started."""
    out = tmp_path / "run"
    assert main(["run", "tiny-qwen3-smoke", "--out", str(out), "--stop-after", "eval-before"]) == 0
    capsys.readouterr()
    assert main(["run", "tiny-qwen3-smoke", "--out", str(out), "--set", "seed=1", "--launch", "accelerate",
                 "--num-processes", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run of a different recipe (seed changed" in err[0]
