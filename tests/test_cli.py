import subprocess
import sys

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
    out = subprocess.run([sys.executable, "-m", "aha.recipes.cli", "formats"], capture_output=True, text=True, check=True)
    assert "unsloth" in out.stdout and "dapo" in out.stdout
