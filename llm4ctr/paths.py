"""Where things live, relative to the project root: raw data, stage artifacts, the download cache."""

from __future__ import annotations

import os
from pathlib import Path


def raw_dir(root: Path, dataset: str) -> Path:
    """data/<dataset>/: raw files as obtained (DVC-tracked through data.dvc; no stage writes here)."""
    return Path(root) / "data" / dataset


def artifact_dir(root: Path, stage: str, dataset: str) -> Path:
    """artifacts/<stage>/<dataset>/: the declared outputs of one stage for one dataset."""
    return Path(root) / "artifacts" / stage / dataset


def cache_dir() -> Path:
    """Download cache for wheels, archives and converted models ($LLM4CTR_CACHE, default ~/.cache/llm4ctr)."""
    base = os.environ.get("LLM4CTR_CACHE") or Path.home() / ".cache" / "llm4ctr"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def gx_dir(root: Path, dataset: str) -> Path:
    """artifacts/gx/<dataset>/: the dataset's Great Expectations project (suites, checkpoints, every validation
    result, the Data Docs site). Not a stage output: it keeps the validation history across runs."""
    return Path(root) / "artifacts" / "gx" / dataset


def failure_path(root: Path, stage: str, dataset: str) -> Path:
    """Where a failed validation's full GX result goes: outside the stage's outputs, which stay intact."""
    return Path(root) / "artifacts" / "failures" / f"{stage}-{dataset}-gx.json"


def portable(path: str | os.PathLike, root: Path) -> str:
    """``path`` as an artifact records it: relative to the project ``root`` (POSIX separators) when it lies
    inside it, so an artifacts/ tree still loads after the project is moved, copied or restored elsewhere;
    anything else (a hub name, a relative path, a folder outside the project such as the user cache) as it is."""
    text = str(path)
    candidate = Path(text)
    if not candidate.is_absolute():
        return text
    for inside, base in ((candidate, Path(root).absolute()), (candidate.resolve(), Path(root).resolve())):
        try:
            return inside.relative_to(base).as_posix()
        except ValueError:
            continue
    return text


def located(value: str | os.PathLike, root: Path) -> Path:
    """A path read back from an artifact: a relative one is relative to the project ``root``
    (see :func:`portable`); an absolute one (outside the project, or an older artifact) as it is."""
    path = Path(value)
    return path if path.is_absolute() else Path(root) / path
