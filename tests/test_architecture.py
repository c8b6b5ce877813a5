"""The house rules, checked on the source: the source tree is the import tree, imports inside the package are
relative (so any static reader sees the arrows), nothing imports upward and nothing imports in a loop."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("pipeline", "exporters", "benchmarks")
# Lowest first: a module may import its own layer or a lower one, never a higher one.
LAYERS = [
    ("imgpipe.pipeline.core",),
    ("imgpipe.pipeline.config",),
    ("imgpipe.exporters.base", "imgpipe.exporters.registry", "imgpipe.exporters.readme_text"),
    ("imgpipe.exporters",),
    ("imgpipe.pipeline.data", "imgpipe.pipeline.plan"),
    ("imgpipe.pipeline.training",),
    ("imgpipe.pipeline.optimize", "imgpipe.pipeline.verify"),
    ("imgpipe.pipeline.reports",),
    ("imgpipe.pipeline.bundle",),
    ("imgpipe.pipeline.history",),
    ("imgpipe.pipeline.settings", "imgpipe.pipeline.reuse"),
    ("imgpipe.pipeline.produce",),
    ("imgpipe.pipeline.build",),
    ("imgpipe.pipeline.api",),
    ("imgpipe.benchmarks",),
    ("imgpipe.pipeline.commands",),
    ("imgpipe.pipeline", "imgpipe"),
]


def module_name(path: Path) -> str:
    """The one rule: imgpipe.<folder>.<module> is <folder>/<module>.py; a folder's __init__.py is the folder."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("imgpipe", *parts[: -1 if parts[-1] == "__init__" else None]))


def source_files() -> list[Path]:
    return [ROOT / "__init__.py"] + sorted(p for folder in PACKAGE_FOLDERS for p in (ROOT / folder).rglob("*.py"))


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported imgpipe module, relative?) for every import in the file, lazy ones inside functions included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [f"{target}.{a.name}" for a in node.names] + [target]
                found.append((next((c for c in candidates if resolves(c)), target), True))
            elif node.module and node.module.split(".")[0] == "imgpipe":
                found.append((node.module, False))
        elif isinstance(node, ast.Import):
            found += [(a.name, False) for a in node.names if a.name.split(".")[0] == "imgpipe"]
    return found


def resolves(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file()


def layer(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "imgpipe") or module == "imgpipe":
            return index
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


GRAPH = {module_name(p): imports(p) for p in source_files()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_inside_the_package_are_relative_and_resolve_to_files(module):
    for target, relative in GRAPH[module]:
        assert relative, f"{module} imports {target} absolutely; use a relative import"
        assert resolves(target), f"{module} imports {target}, which is no file of the tree"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_nothing_imports_upward(module):
    for target, _ in GRAPH[module]:
        if target in GRAPH and not target.startswith(module + "."):
            assert layer(target) <= layer(module), (
                f"{module} (layer {layer(module)}) imports {target} ({layer(target)})"
            )


def test_there_is_no_import_loop():
    edges = {m: {t for t, _ in targets if t in GRAPH and t != m} for m, targets in GRAPH.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            assert state.get(nxt) != "open", "import loop: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_installed_packages_are_exactly_the_folders():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {module_name(p) for p in source_files() if p.name == "__init__.py"}
    assert set(setuptools["packages"]) == folders
    assert setuptools["package-dir"] == {"imgpipe": "."}
    assert all(name == "imgpipe" or name.startswith("imgpipe.") for name in setuptools["packages"])


def test_every_format_package_is_a_format_module():
    from imgpipe.exporters.base import FormatModule
    from imgpipe.exporters.registry import FORMATS

    required = [name for name in dir(FormatModule) if not name.startswith("_")]
    for spec in FORMATS.values():
        module = spec.load()
        assert all(callable(getattr(module, name, None)) for name in required), spec.name
        assert (ROOT / "exporters" / spec.name / "__init__.py").is_file()


def test_the_package_root_imports_nothing_when_loaded():
    """pytest loads the root __init__.py as a stand-alone module named after the checkout folder (any name, dashes
    included) while collecting tests/; a module-level relative import there would break every test."""
    tree = ast.parse((ROOT / "__init__.py").read_text())
    assert not [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
