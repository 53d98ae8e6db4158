"""The import table of DESIGN.md ("Layers"), read from the document and checked with ast: each
layer imports only those below it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vwproxy"
DESIGN = PACKAGE.parent / "DESIGN.md"


def _design_table() -> dict[str, set[str]]:
    """The rows (layer, holds, may import) of DESIGN.md's Layers table; "all above" is every earlier layer."""
    allowed: dict[str, set[str]] = {}
    for line in DESIGN.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z]+)`", cells[0])
        imports = set(re.findall(r"`([a-z]+)`", cells[2]))
        if cells[2] == "all above":
            imports = set(allowed)
        for name in names:
            allowed[name] = imports
    return allowed


ALLOWED = _design_table()
# Third-party packages the pure layers may use (DESIGN.md: kube and core do no I/O).
PURE_THIRD_PARTY = {"orjson", "jsonschema", "cachetools", "zstandard"}  # pure computation: CRD schemas, TTL caches, packing
PURE_LAYERS = {"kube", "core"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _layer_files() -> list[tuple[str, Path]]:
    return [(layer, path) for layer in ALLOWED for path in sorted((PACKAGE / layer).rglob("*.py"))]


def test_the_design_table_names_every_layer() -> None:
    assert set(ALLOWED) >= {"kube", "core", "store", "upstream", "auth", "control", "cache", "server", "cli", "testing"}, ALLOWED
    assert ALLOWED["kube"] == set() and ALLOWED["core"] == {"kube"}
    assert ALLOWED["server"] >= {"cache", "control"} and "server" not in ALLOWED["cache"]


def test_every_layer_exists() -> None:
    for layer in (name for name in ALLOWED if name != "cli"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def test_layers_import_only_layers_below() -> None:
    problems = []
    for layer, path in _layer_files():
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "vwproxy" and len(parts) > 1:
                target = parts[1]
                if target in ALLOWED and target != layer and target not in ALLOWED[layer]:
                    problems.append(f"{path.relative_to(PACKAGE)} imports vwproxy.{target}")
                if target in ("cli",) and layer != "testing":
                    problems.append(f"{path.relative_to(PACKAGE)} imports vwproxy.cli")
    assert not problems, problems


def test_pure_layers_use_only_stdlib_and_orjson() -> None:
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for layer, path in _layer_files():
        if layer not in PURE_LAYERS:
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ("vwproxy", "__future__") or top in stdlib or top in PURE_THIRD_PARTY:
                continue
            problems.append(f"{path.relative_to(PACKAGE)} imports {name}")
        source = path.read_text()
        for io_module in ("asyncio", "socket", "sqlite3", "threading"):
            if f"import {io_module}" in source:
                problems.append(f"{path.relative_to(PACKAGE)} imports {io_module} (pure layers do no I/O)")
    assert not problems, problems


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from vwproxy.server import http\nimport httpx\n")
    assert _imports(bad) == ["vwproxy.server", "httpx"]
