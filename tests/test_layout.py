"""The package's shape, checked: imports follow the stage order docs/architecture.md gives, a module
that imports inside functions says why, and no function runs past 80 lines without a reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "trace_realign"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
LONG = 80


def layers() -> list[list[str]]:
    """The stage order, lowest first, from the architecture doc's `Layers:` line (`a b < c < d`)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    line = re.search(r"^Layers, lowest first: (.+)$", text, flags=re.M)
    assert line, "docs/architecture.md has no 'Layers, lowest first:' line"
    return [re.findall(r"[\w.]+", part) for part in line.group(1).split("<")]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def rank_of(module: str, order: list[list[str]]) -> tuple[int, int] | None:
    """(layer, position within a ground-floor layer) of a package module, by its first name."""
    parts = module.split(".")
    if parts[0] != "trace_realign" or len(parts) == 1:
        return None
    name = parts[1]
    for i, layer in enumerate(order):
        if name in layer:
            return i, layer.index(name)
    raise AssertionError(f"{module}: {name} is in no layer of docs/architecture.md")


def test_no_import_runs_against_the_stage_order():
    order = layers()
    against = []
    for path in modules():
        me = module_name(path)
        mine = rank_of(me, order) if me != "trace_realign" else (len(order), 0)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            theirs = rank_of(node.module, order)
            if theirs is None or mine is None or me.split(".")[1:2] == node.module.split(".")[1:2]:
                continue
            # a higher layer, or within the ground floor a module listed after this one
            if theirs > mine:
                against.append(f"{me}:{node.lineno} imports {node.module}")
    assert not against, "\n".join(against)


def test_imports_inside_functions_are_explained():
    """Only where they keep start-up light, and then the module says so once."""
    silent = []
    for path in modules():
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
        inner = [
            sub.lineno
            for fn in ast.walk(tree)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(fn)
            if isinstance(sub, (ast.Import, ast.ImportFrom))
        ]
        if inner and "# Imported inside functions:" not in src:
            silent.append(f"{module_name(path)} (line {inner[0]})")
    assert not silent, "imports inside functions without the module's reason: " + ", ".join(silent)


def test_long_functions_say_why():
    long = []
    for path in modules():
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = fn.end_lineno - fn.lineno + 1
                if n > LONG and "Long because" not in (ast.get_docstring(fn) or ""):
                    long.append(f"{module_name(path)}.{fn.name}: {n} lines")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("name", ["stats", "losses", "cache", "judges", "triage", "impact", "update", "demo"])
def test_the_architecture_doc_names_every_layer(name):
    assert any(name in layer for layer in layers())
