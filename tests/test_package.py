"""The installed layout: four subpackages under ``aha`` and nothing else at the top level."""

from importlib import metadata


def test_only_aha_lands_in_site_packages():
    files = metadata.files("aha-recipes")
    top = {f.parts[0] for f in files if not f.parts[0].startswith("..")}
    top = {t for t in top if not t.endswith(".dist-info")}
    assert top <= {"aha"} or all(t.startswith("__editable__") for t in top - {"aha"}), top


def test_subpackages_import_and_cli_entry_point():
    import aha.eval
    import aha.formats
    import aha.recipes
    import aha.rewards

    assert {p.__name__ for p in (aha.formats, aha.rewards, aha.eval, aha.recipes)} == {
        "aha.formats", "aha.rewards", "aha.eval", "aha.recipes"}
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts") if e.name == "aha"}
    assert scripts == {"aha": "aha.recipes.cli:main"}


def test_formats_imports_nothing_of_ours():
    import ast
    import pathlib

    import aha.formats

    for path in pathlib.Path(aha.formats.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not node.module.startswith("aha."), f"{path.name} imports {node.module}"
