"""Project structure: the wheel holds every package folder, functions stay short, version."""

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("processors", "models", "training", "datasets")
MAX_FUNCTION_LINES = 50


def _package_dirs() -> set[str]:
    """Every folder under the four package folders that holds Python modules."""
    found = set()
    for top in PACKAGE_FOLDERS:
        for py in (ROOT / top).rglob("*.py"):
            found.add(str(py.parent.relative_to(ROOT)))
    return found


def test_every_package_folder_is_in_the_wheel():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = set(setuptools["package-dir"].values())
    assert set(setuptools["packages"]) == set(setuptools["package-dir"])
    assert _package_dirs() == mapped, "a package folder is missing from [tool.setuptools] (or stale)"
    for folder in mapped:
        assert (ROOT / folder / "__init__.py").is_file(), f"{folder} has no __init__.py"


def test_no_tests_package_and_no_conftest_imports():
    assert not list((ROOT / "tests").rglob("__init__.py"))
    for path in (ROOT / "tests").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) tests\b", path.read_text(), re.MULTILINE), path


def _functions():
    for top in PACKAGE_FOLDERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield path.relative_to(ROOT), node


def test_no_function_longer_than_50_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node in _functions()
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def _public_api():
    """Module-level functions and methods of module-level classes, not starting with _."""
    for top in PACKAGE_FOLDERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text())
            nodes = list(tree.body)
            for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")):
                nodes += cls.body
            for node in nodes:
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                    yield path.relative_to(ROOT), node


def test_public_functions_have_docstrings_and_annotated_returns():
    missing = [
        f"{path}:{node.lineno} {node.name}"
        for path, node in _public_api()
        if ast.get_docstring(node) is None or node.returns is None
    ]
    assert not missing, missing


def test_version_from_package_metadata():
    from importlib import metadata

    import hepsieve.processors

    assert hepsieve.processors.__version__ == metadata.version("hepsieve")


@pytest.mark.parametrize(
    "name", ["CHANGELOG.md", "LICENSE", ".pre-commit-config.yaml", ".ci/run", ".ci/static"]
)
def test_project_files_exist(name):
    assert (ROOT / name).is_file()
