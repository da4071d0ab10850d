"""The stage records keep their promises: each stage module declares its own record (function,
recipe values read first, files written, results reader), the table is a plain list of them,
and no stage module imports the table or the runner back. The end-to-end smoke run
(tests/test_recipes.py) checks the promises on a real run; here each check is shown to fail on a
planted break: an undeclared read, an undeclared file, an import cycle."""

import ast
import dataclasses
import json
from pathlib import Path

from aha.recipes.api import load_recipe
from aha.recipes.stages import kernel, table

STAGES_DIR = Path(__file__).resolve().parents[1] / "recipes" / "stages"
MACHINERY = {"__init__", "kernel", "table", "runner", "results", "evidence", "memory"}  # the machinery, not stages


def _stage_modules() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(STAGES_DIR.glob("*.py")) if p.stem not in MACHINERY}


def _imports_back(source: str) -> set[str]:
    """The table or runner modules a stage module's source imports (at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[-1] if node.level else node.module or ""
            if module in ("table", "runner") or module.endswith(("stages.table", "stages.runner")):
                found.add(module.split(".")[-1])
            if node.level and not node.module:  # from . import table
                found |= {a.name for a in node.names if a.name in ("table", "runner")}
    return found


def test_every_stage_is_declared_in_its_own_module_and_imports_no_table_back():
    modules = _stage_modules()
    declared = {s.run.__module__.rsplit(".", 1)[-1] for s in table.STAGES}
    assert declared == set(modules), "every stage module declares a stage in the table, and only those"
    for stage in table.STAGES:
        assert callable(stage.run) and stage.writes, stage.name  # the function itself, and what it writes
    assert {name: _imports_back(source) for name, source in modules.items() if _imports_back(source)} == {}
    planted = modules["export"].replace("from .kernel import", "from .table import STAGES\nfrom .kernel import")
    assert _imports_back(planted) == {"table"}  # a cycle is caught


def test_an_undeclared_read_is_caught(stage_checks, monkeypatch):
    recipe = load_recipe("tiny-qwen3-smoke")
    reads = {"eval-before": {"eval.tasks", "model.name"}, "eval-after-sft": {"grpo.temperature"}, "grpo": {"grpo.beta"}}
    assert stage_checks.undeclared_reads(reads, recipe) == []
    assert stage_checks.undeclared_reads({"eval-before": {"grpo.temperature"}}, recipe) == [
        "eval-before: grpo.temperature"]
    # the evaluation after the warmup no longer declaring GRPO's sampling: its read of the temperature is caught
    stages = tuple(dataclasses.replace(s, reads=()) if s is table.EVAL_AFTER_SFT else s for s in table.STAGES)
    monkeypatch.setattr(table, "STAGES", stages)
    assert stage_checks.undeclared_reads(reads, recipe) == ["eval-after-sft: grpo.temperature"]


def test_an_undeclared_file_is_caught(stage_checks, tmp_path):
    run = tmp_path / "run"
    for rel in ("state.json", "run.log", "eval-before/arith-l1/summary.json", "export/adapter/adapter_config.json",
                "export/adapter/README.md", "report.md"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text("{}")
    wrote = {"eval-before": ["eval-before/arith-l1/summary.json"], "export": ["export/adapter/adapter_config.json"],
             "publish": ["export/adapter/README.md"], "report": ["report.md"]}
    (run / "state.json").write_text(json.dumps({"stages": {}, "wrote": wrote}))
    assert stage_checks.undeclared_files(run) == []
    (run / "notes.txt").write_text("a file no stage writes")
    wrote["compare"] = ["report.md"]  # recorded as another stage's than the one that declares it
    (run / "state.json").write_text(json.dumps({"stages": {}, "wrote": wrote}))
    assert stage_checks.undeclared_files(run) == ["notes.txt", "compare: report.md"]


def test_patterns_match_within_a_name_and_at_any_depth():
    stage = kernel.Stage("x", "", lambda ctx: {}, writes=("x/**", "export/*/README.md", "report.md"))
    assert stage.wrote("x/a/b/c.json") and stage.wrote("export/merged/README.md") and stage.wrote("report.md")
    assert not stage.wrote("export/merged/sub/README.md") and not stage.wrote("xy/a") and not stage.wrote("a/report.md")


def test_results_are_read_by_the_stages_that_wrote_them(tmp_path):
    """The results reader is a loop over the table: a stage without a reader adds nothing, and each reader
    reads only its own folder."""
    from aha.recipes.stages.kernel import read_results

    run = tmp_path / "run"
    (run / "preflight").mkdir(parents=True)
    (run / "preflight" / "preflight.json").write_text(json.dumps({"stats": {"prompts": 4}}))
    (run / "state.json").write_text(json.dumps({"stages": {"preflight": {"seconds": 1.0}}, "wrote": {}}))
    assert table.read_run(run).preflight == {"stats": {"prompts": 4}}
    assert read_results(run, ()).preflight is None  # no stage, nothing read
