"""Nothing of the user's is overwritten or deleted: a run goes into a new, empty or aha run
folder; `aha eval` writes only into a new, empty or earlier results folder; an empty --out
(which would be the current folder) is refused. Each refusal is one line, exit code 2, and the
user's files are as they were."""

from pathlib import Path

from aha.recipes.cli import main


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("aha: error:") and "\n" not in err, err
    return err


def test_a_run_into_the_users_folder_deletes_nothing(tmp_path, capsys):
    user = tmp_path / "userdir"
    (user / "export").mkdir(parents=True)
    (user / "export" / "keep.txt").write_text("mine")
    (user / "report.md").write_text("my report")
    before = _snapshot(user)
    assert main(["run", "tiny-qwen3-smoke", "--out", str(user), "--from", "export", "--stop-after", "eval-before"]) == 2
    err = _one_line(capsys)
    assert "holds files that are not an aha run's (export, report.md) and no state.json" in err
    assert _snapshot(user) == before and sorted(p.name for p in user.iterdir()) == ["export", "report.md"]


def test_eval_into_the_users_folder_or_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "summary.json").write_text('{"mine": true}')
    argv = ["eval", "--model", "builtin:tiny-qwen3", "--task", "arith", "--limit", "2", "--max-new-tokens", "4"]
    assert main(argv + ["--out", ""]) == 2
    assert "--out is empty: name a folder" in _one_line(capsys)
    assert main(argv + ["--out", str(tmp_path)]) == 2
    assert "holds files aha did not write (summary.json)" in _one_line(capsys)
    assert (tmp_path / "summary.json").read_text() == '{"mine": true}'
    assert main(["run", "tiny-qwen3-smoke", "--dry-run", "--out", ""]) == 2
    assert "--out is empty" in _one_line(capsys)

