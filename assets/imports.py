"""The project source files a stage runs: the import closure of its module, read from the source.

DVC re-runs a stage when one of its code dependencies changes, so the list must be complete; kept
by hand it never is. :func:`closure` follows every ``import`` of a project package (``assets``,
``models``, ``llm4ctr``, ...) from a module, including imports inside functions (the project imports
heavy libraries lazily), without importing anything. A folder whose every module is in the closure
is listed as the folder.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("llm4ctr", "assets", "models", "orchestration", "serving")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (``models.ctr`` -> models/ctr/__init__.py); None if not a project file."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports(path: Path) -> tuple[str, ...]:
    """The project modules ``path`` imports anywhere in its body (``from a.b import c`` -> a.b and a.b.c)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return tuple(name for name in found if name.split(".")[0] in PROJECT_PACKAGES)


def _parents(module: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(modules: Iterable[str], root: Path = ROOT) -> list[str]:
    """Every project file that importing ``modules`` runs, relative to ``root``, sorted, with folders
    whose modules are all included collapsed to the folder."""
    files: set[Path] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        for name in (*_parents(module), module):
            path = module_file(name, root)
            if path is not None and path not in files:
                files.add(path)
                todo += _imports(path)
    return _collapse({p.relative_to(root).as_posix() for p in files}, root)


def _collapse(files: set[str], root: Path) -> list[str]:
    """Replace the files of a folder by the folder when all of its .py files (recursively) are listed."""
    folders = sorted({str(Path(f).parent) for f in files if Path(f).parent != Path(".")}, key=len)
    listed = set(files)
    for folder in folders:
        if str(Path(folder).parent) in listed:  # already collapsed into a parent folder
            continue
        members = {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.py")}
        is_package_root = "/" not in folder  # a top-level package stays a list of files: it holds every stage
        if not is_package_root and members and members <= listed:
            listed = {f for f in listed if not f.startswith(folder + "/")} | {folder}
    return sorted(listed)
