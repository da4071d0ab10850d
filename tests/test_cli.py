import subprocess
import sys
from pathlib import Path

import pytest

from aha.recipes.cli import main


def test_explain_table(capsys):
    assert main(["rewards", "explain", "--answer", "34", "x<end_working_out><SOLUTION>34</SOLUTION>"]) == 0
    out = capsys.readouterr().out
    assert "format_exact" in out and "check_answer_numeric    5.000" in out


def test_explain_says_which_tag_is_missing(capsys, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("long working out\n<SOLUTION>34</SOLUTION>")
    assert main(["rewards", "explain", "--answer", "#### 34", f"@{path}"]) == 0
    assert "<end_working_out> missing" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["rewards", "explain", "--format", "nope", "x"], "unknown format 'nope'"),
    (["rewards", "explain", "@/no/such/file"], "no such file"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_console_script_is_installed():
    """The `aha` executable pip puts next to this interpreter (not `python -m`)."""
    script = Path(sys.executable).parent / "aha"
    assert script.is_file(), f"no console script at {script}"
    out = subprocess.run([str(script), "formats"], capture_output=True, text=True, check=True)
    assert "unsloth" in out.stdout and "dapo" in out.stdout


def test_internal_error_keeps_its_traceback_in_run_log(capsys, tmp_path, monkeypatch):
    """A bug (not the user's mistake) is not dressed up as one: exit 1, one line naming the
    error and run.log, the full traceback in run.log, and the stage is not marked done."""
    import json

    import dataclasses

    from aha.recipes.stages import table

    def broken_stage(ctx):
        return {}["no such key"]  # a bug in a stage, as a KeyError from deep inside would be

    monkeypatch.setitem(table.BY_NAME, "eval-before", dataclasses.replace(table.EVAL_BEFORE, run=broken_stage))
    out = tmp_path / "run"
    assert main(["run", "tiny-qwen3-smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("aha: internal error: KeyError: 'no such key'") and str(out / "run.log") in err
    log = (out / "run.log").read_text()
    assert "Traceback (most recent call last)" in log and "broken_stage" in log
    assert "stage eval-before stopped" in log
    assert "eval-before" not in json.loads((out / "state.json").read_text()).get("stages", {})
