"""The package layering of docs/ARCHITECTURE.md holds: imports point one way, nothing imports serving/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llm4ctr", "models", "assets", "orchestration", "serving")
FORBIDDEN = {  # package -> project packages it must not import
    "llm4ctr": {"models", "assets", "orchestration", "serving"},
    "models": {"assets", "orchestration", "serving"},
    "assets": {"orchestration", "serving"},
    "orchestration": {"serving"},
    "serving": {"orchestration"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package):
    wrong = {
        f"{path.relative_to(ROOT)} imports {bad}"
        for path in (ROOT / package).rglob("*.py")
        for bad in imported_packages(path) & FORBIDDEN[package]
    }
    assert not wrong, sorted(wrong)
