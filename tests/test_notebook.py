"""notebooks/quickstart.ipynb: stored without outputs, and executed top to bottom in a real
Jupyter kernel on the tiny smoke recipe (offline, CPU), as a Colab user would run it."""

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    # One parameter cell, first among the code cells: the recipe choice lives there alone.
    assert "parameters" in code[0]["metadata"].get("tags", []) and "RECIPE =" in "".join(code[0]["source"])


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    out = tmp_path / "run"
    # The parameters, as CI passes them: no install (aha is installed), the smoke recipe, a run folder.
    monkeypatch.setenv("AHA_NOTEBOOK_INSTALL", "0")
    monkeypatch.setenv("AHA_NOTEBOOK_RECIPE", "tiny-qwen3-smoke")
    monkeypatch.setenv("AHA_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "every cell ran"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    # The run folder has what the notebook promises.
    assert (out / "grpo" / "adapter" / "adapter_config.json").is_file()
    assert (out / "export" / "adapter").is_dir() and (out / "report.md").is_file()
    for stage in ("eval-before", "eval-after-sft", "eval-after"):
        assert (out / stage / "arith-l1" / "summary.json").is_file()
    assert (out / "compare" / "arith-l1" / "grpo" / "compare.json").is_file()
    # The report shows inline: the before/after tables and the chart.
    shown = "".join(o.get("data", {}).get("text/markdown", "") for c in code for o in c.outputs)
    assert "## Paired comparisons" in shown and "data:image/png;base64," in shown
    assert "| question | base | sft | grpo |" in shown  # try_model's side-by-side table
