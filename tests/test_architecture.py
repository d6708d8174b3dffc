"""The layout's rules (ARCHITECTURE.md), checked on the source: folders import one way, the core
never imports Dagster, nothing in the product imports the development tools, no import hides
inside a function, and functions and modules stay small enough to do one job."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tol_dagster"

#: Each unit may import only its own layer and earlier ones: the data's way, Hub to consumer.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "__init__ errors schema duck exit_codes progress thread_pools parquet",
        "hub",
        "store",
        "settings cluster_settings batches",
        "validation",
        "resync",
        "derived",
        "slices",
        "catalog",
        "defs definitions",
        "devtools",
        "cli",
    )
)
DAGSTER_LAYER = {"defs", "definitions", "cli", "devtools"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
#: Data, not logic: the sample's taxa table.
DATA_TABLES = {"devtools/sample_taxa.py"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _unit(relative: str) -> str:
    """The folder (or top-level module) a module belongs to: `resync/stage.py` -> `resync`."""
    return relative.split("/")[0].removesuffix(".py")


def _layer(unit: str) -> int:
    for number, layer in enumerate(LAYERS):
        if unit in layer:
            return number
    raise AssertionError(f"{unit} is in no layer: add it to LAYERS and to ARCHITECTURE.md")


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "tol_dagster":  # a module, or a name of the package (__version__)
                yield from ((node.lineno, f"tol_dagster.{_submodule(a.name)}") for a in node.names)
            else:
                yield node.lineno, node.module


def _submodule(name: str) -> str:
    is_module = (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()
    return name if is_module else "__init__"


def _parsed() -> Iterator[tuple[str, ast.Module, str]]:
    for path in _modules():
        source = path.read_text()
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(source), source


def test_every_unit_is_in_a_layer() -> None:
    units = {_unit(rel) for rel, _, _ in _parsed()}
    for unit in units:
        _layer(unit)


def test_folders_import_one_way_along_the_data() -> None:
    wrong = []
    for relative, tree, _ in _parsed():
        unit = _unit(relative)
        for line, module in _imports(tree):
            if not module.startswith("tol_dagster."):
                continue
            target = module.split(".")[1]
            if target != unit and _layer(target) > _layer(unit):
                wrong.append(f"{relative}:{line} ({unit}) imports {module} (a later stage)")
    assert not wrong, "\n".join(wrong)


def test_only_the_dagster_layer_imports_dagster() -> None:
    wrong = [
        f"{relative}:{line} imports {module}"
        for relative, tree, _ in _parsed()
        if _unit(relative) not in DAGSTER_LAYER
        for line, module in _imports(tree)
        if module == "dagster" or module.startswith(("dagster.", "dagster_"))
    ]
    assert not wrong, "\n".join(wrong)


def test_nothing_in_the_product_imports_the_development_tools() -> None:
    wrong = [
        f"{relative}:{line} imports {module}"
        for relative, tree, _ in _parsed()
        if _unit(relative) not in {"cli", "devtools"}
        for line, module in _imports(tree)
        if module.startswith("tol_dagster.devtools")
    ]
    assert not wrong, "\n".join(wrong)


#: The one import of ours inside a function, and why: the console script guards the command
#: line's seconds of loading against Ctrl-C (an interrupt, not a traceback).
GUARDED_IMPORTS = {("cli/entry.py", "tol_dagster.cli.main")}


def test_no_module_of_ours_is_imported_inside_a_function() -> None:
    wrong = []
    for relative, tree, _ in _parsed():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                wrong.extend(
                    f"{relative}:{line} imports {module} inside {node.name}()"
                    for line, module in _imports(node)
                    if module.startswith("tol_dagster")
                    and (str(relative), module) not in GUARDED_IMPORTS
                )
    assert not wrong, "\n".join(wrong)


def test_functions_and_modules_stay_small() -> None:
    wrong = []
    for relative, tree, source in _parsed():
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES and relative not in DATA_TABLES:
            wrong.append(f"{relative}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    wrong.append(f"{relative}:{node.lineno} {node.name}() is {length} lines")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "folder",
    sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()),
)
def test_each_folder_says_what_it_owns_and_may_import(folder: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
    assert doc and "import" in doc.lower(), (
        f"{folder}/__init__.py needs a docstring naming what it may import"
    )
