"""notebooks/quickstart.ipynb: stored without outputs, and executed top to bottom in a real
Jupyter kernel on the tiny smoke recipe (offline, CPU), as a Colab user would run it."""

import json
import os
import subprocess
import sys
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


def _repository() -> str:
    import tomllib

    pyproject = tomllib.loads((NOTEBOOK.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    return pyproject["project"]["urls"]["Repository"].rstrip("/")


def test_the_colab_badge_and_the_install_cell_point_at_the_repository():
    repo = _repository()
    readme = (NOTEBOOK.parents[1] / "README.md").read_text(encoding="utf-8")
    colab = repo.replace("https://github.com/", "https://colab.research.google.com/github/")
    assert f"]({colab}/blob/main/notebooks/quickstart.ipynb)" in readme  # the badge opens Colab on the notebook
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    parameters = "".join(nb["cells"][2]["source"])
    assert f'AHA_SOURCE = "git+{repo}.git"' in parameters
    raw = repo.replace("https://github.com/", "https://raw.githubusercontent.com/")
    assert f'GPU_STACK = "{raw}/main/constraints-gpu.txt"' in parameters  # the GPU install's pins, from the repository
    assert (NOTEBOOK.parents[1] / "constraints-gpu.txt").is_file()


@pytest.mark.slow
def test_the_install_cell_installs_aha_into_a_fresh_environment(tmp_path):
    """The install cell, run for real as Colab runs it: a fresh virtual environment that has
    only torch (as a Colab runtime has it), aha from a wheel built here (standing in for the
    repository URL), everything else from the package index."""
    root = NOTEBOOK.parents[1]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(root)], check=True,
                   cwd=tmp_path, timeout=600)
    wheel = next(wheels.glob("aha_recipes-*.whl"))
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    import torch

    subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}"], check=True,
                   timeout=900)
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    program = "".join(cells[0]["source"]) + "\n" + "".join(cells[1]["source"])
    env = {**os.environ, "AHA_NOTEBOOK_INSTALL": "1", "AHA_NOTEBOOK_SOURCE": wheel.as_uri(), "HF_HUB_OFFLINE": "1",
           "PIP_CONSTRAINT": ""}
    done = subprocess.run([python, "-c", program], env=env, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    check = ("from aha.recipes import load_recipe; import trl, peft; "
             "print(load_recipe('tiny-qwen3-smoke').grpo.args.num_generations)")
    done = subprocess.run([python, "-c", check], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "4", done.stderr[-3000:]


def _code_cells() -> list[str]:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_install_cell_imports_nothing_it_installs_before_installing():
    """A torch imported before pip replaces it stays the old one in the running kernel, and Unsloth and
    vLLM built for the new one then fail to import (or Unsloth quietly turns vLLM off): every cell up to
    and including the install cell imports only the standard library."""
    import ast

    for source in _code_cells()[:2]:
        imported = {a.name.split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                    for a in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(source))
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert imported and imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


@pytest.mark.parametrize("driver, refused", [("550.54.15", True), ("no GPU", False)])
def test_the_install_cell_refuses_a_driver_too_old_for_the_gpu_install(tmp_path, driver, refused):
    """An nvidia-smi that reports a driver older than CUDA 13 needs: one line, before pip runs (its source is
    a folder that does not exist, so a pip run would fail otherwise). Without a GPU the cell goes on to pip."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if driver != "no GPU":
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\necho {driver}\n")
        smi.chmod(0o755)
    program = "\n".join(_code_cells()[:2])
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "AHA_NOTEBOOK_INSTALL": "1",
           "AHA_NOTEBOOK_SOURCE": (tmp_path / "missing").as_uri(), "PIP_CONSTRAINT": "", "PIP_NO_INDEX": "1"}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode != 0
    err = done.stderr.strip().splitlines()
    if refused:
        assert err == [f"this GPU's NVIDIA driver is {driver}; the GPU install's torch is a CUDA 13 build, which needs "
                       "driver 580 or newer (with an older one CUDA would be invisible and the run would quietly "
                       "become a CPU run): update the driver, or choose a newer runtime"]
    else:
        assert "CalledProcessError" in done.stderr and "pip" in done.stderr  # it went on to install
