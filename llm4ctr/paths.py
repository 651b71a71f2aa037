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


def failure_path(root: Path, stage: str, dataset: str) -> Path:
    """Where a failed validation's full GX result goes: outside the stage's outputs, which stay intact."""
    return Path(root) / "artifacts" / "failures" / f"{stage}-{dataset}-gx.json"
