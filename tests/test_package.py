"""The installed layout: four subpackages under ``aha`` and nothing else at the top level."""

from importlib import metadata
from pathlib import Path

import pytest


def _installed():
    # The installed record (a .dist-info), not a build's egg-info left in the source tree.
    found = [d for d in metadata.distributions(name="aha-recipes") if str(d._path).endswith(".dist-info")]
    assert found, "aha-recipes is not installed"
    return found[0]


def test_only_aha_lands_in_site_packages():
    top = {f.parts[0] for f in _installed().files if not f.parts[0].startswith("..")}
    top = {t for t in top if not t.endswith(".dist-info")}
    if any(t.startswith("__editable__") for t in top):
        pytest.skip("editable install: its import hook is not the layout users get (scripts/dev.sh installs a wheel)")
    assert top == {"aha"}, top


def test_subpackages_import_and_cli_entry_point():
    import aha.eval
    import aha.formats
    import aha.recipes
    import aha.rewards

    assert {p.__name__ for p in (aha.formats, aha.rewards, aha.eval, aha.recipes)} == {
        "aha.formats", "aha.rewards", "aha.eval", "aha.recipes"}
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts") if e.name == "aha"}
    assert scripts == {"aha": "aha.recipes.cli:main"}


ALLOWED = {  # imports point one way: formats <- rewards <- eval <- recipes
    "formats": set(),
    "rewards": {"aha.formats"},
    "eval": {"aha.formats", "aha.rewards"},
    "recipes": {"aha.formats", "aha.rewards", "aha.eval"},
}


def _one_way_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports between the four packages that point the wrong way (relative ones included)."""
    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    return sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                  if top(target) != top(module) and top(target) not in ALLOWED[top(module).split(".")[1]])


@pytest.mark.parametrize("copy", ["installed", "source"])
def test_imports_point_one_way(copy):
    """Checked on the import graph of the installed package and of the source tree alike, so a relative
    import (``from ..eval import x`` in formats/) counts as much as an absolute one."""
    assert _one_way_violations(_import_graph(None if copy == "installed" else SOURCE)) == []


def test_a_relative_import_climbing_the_wrong_way_is_caught(tmp_path):
    for package in ALLOWED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "eval" / "tasks.py").write_text("X = 1\n")
    (tmp_path / "formats" / "bad.py").write_text("def f():\n    from ..eval.tasks import X\n    return X\n")
    assert _one_way_violations(_import_graph(tmp_path)) == ["aha.formats.bad -> aha.eval.tasks"]


def test_nothing_points_outside_the_repo():
    """Users have the repository and nothing beside it: no file may read or cite a path outside it."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    outside = re.compile(r"\.\./shared|/work/shared|parents\[\d\]\.parent|\.parent\s*/\s*['\"]shared['\"]")
    offenders = []
    for name in listed:
        path = root / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".ipynb", ".txt", ".cfg"} and \
                not name.startswith(".ci/"):
            continue
        if name == "tests/test_package.py" or not path.is_file():  # this test names the patterns it looks for
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{name}: {m.group(0)}" for m in outside.finditer(text)]
    assert offenders == [], offenders


SOURCE = __import__("pathlib").Path(__file__).resolve().parents[1]  # the checkout: formats/, rewards/, eval/, recipes/


def _import_graph(source=None) -> dict[str, set[str]]:
    """Every module of ``aha`` -> the modules of ``aha`` it imports, wherever the import stands (top
    level, inside a function, under TYPE_CHECKING); ``from .x import y`` points at module ``x.y``
    when that is a module, else at ``x``. ``source``: a folder holding the four package folders (the
    checkout), else the installed package."""
    import ast
    import importlib
    import pathlib

    if source is None:
        root = pathlib.Path(importlib.import_module("aha.recipes").__file__).parents[1]
        files = [(path, path.relative_to(root.parent)) for path in root.rglob("*.py")]
    else:
        files = [(path, pathlib.Path("aha") / path.relative_to(source)) for package in ALLOWED
                 for path in (pathlib.Path(source) / package).rglob("*.py")]
    modules = {}
    for path, relative in files:
        parts = list(relative.with_suffix("").parts)
        package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if package else parts)] = (path, package)
    graph = {}
    for name, (path, package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                here = name.split(".") if package else name.split(".")[:-1]
                base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                    else node.module
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles():
    """No module of aha imports, directly or through others, a module that imports it back."""
    graph = _import_graph()
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


RECIPES_LAYERS = ("config", "training", "launch", "stages", "api", "cli")  # each imports only those before it


def _recipes_layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != ["aha", "recipes"]:
        return None
    name = parts[2] if len(parts) > 2 else "api"  # the package's own __init__ is the API's front door
    # seeds runs whole recipes through the API; a rehearsal is a recipe's mapping rewritten before the API loads it;
    # the reference docs read every registry, as the API does
    return RECIPES_LAYERS.index("api" if name in ("seeds", "rehearsal", "reference") else name)


def test_recipes_layers_point_one_way():
    """Inside recipes/: config <- training <- launch <- stages <- api (and seeds) <- cli."""
    climbs = [f"{module} -> {target}" for module, targets in _import_graph().items() for target in targets
              if _recipes_layer(module) is not None and _recipes_layer(target) is not None
              and _recipes_layer(target) > _recipes_layer(module)]
    assert climbs == [], climbs


def test_the_reference_docs_are_what_the_registries_say():
    """docs/reference.md (tasks, reward layers, formats, stages, recipe keys) is written from the registries:
    rewrite it with `python -m aha.recipes.reference > docs/reference.md` after changing one."""
    from aha.recipes.reference import reference

    shipped = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text(encoding="utf-8")
    assert shipped == reference(), "rewrite it: python -m aha.recipes.reference > docs/reference.md"
