"""The stage registry: the single source of truth for the pipeline's DAG.

Each :class:`Stage` names its function, the files it reads and writes (``{dataset}`` stands for the
dataset name), and the params keys it depends on. ``dvc.yaml`` is generated from this list
(``llm4ctr dvc-yaml``) and the Dagster asset graph is built from it, so the two runners cannot drift;
a test regenerates dvc.yaml and fails when the committed file differs.

Upstream stages are derived, not declared: stage B depends on stage A when one of B's ``deps`` lies
inside one of A's ``outs``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DATASET = "{dataset}"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: ``func`` and ``check`` are "module:function" strings, imported lazily."""

    name: str
    description: str
    func: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    code: tuple[str, ...] = ()  # source files/folders whose change must re-run the stage
    check: str | None = None  # data-quality check re-run on the outputs (a blocking Dagster asset check)
    metrics: tuple[str, ...] = field(default=())

    def resolve(self, attr: str = "func") -> Callable[..., Any]:
        """Import and return the callable named by ``func`` or ``check``."""
        module, _, name = getattr(self, attr).partition(":")
        return getattr(importlib.import_module(module), name)

    def paths(self, kind: str, dataset: str) -> list[str]:
        """``deps`` or ``outs`` with the dataset filled in."""
        return [p.replace(DATASET, dataset) for p in getattr(self, kind)]


def _inside(path: str, out: str) -> bool:
    return path == out or path.startswith(out.rstrip("/") + "/")


STAGES: tuple[Stage, ...] = (
    Stage(
        name="ingest",
        description="Parse the raw files of one dataset into the normalized interactions table, GX-validated.",
        func="assets.ingest:run",
        deps=("data/{dataset}",),
        outs=("artifacts/ingest/{dataset}",),
        params=("data.name", "data.label_rules", "data.amazon", "data.missing_references"),
        code=("assets/ingest.py", "assets/datasets", "assets/validation.py", "assets/schema.py"),
        check="assets.ingest:check",
    ),
    Stage(
        name="split",
        description="Split 8:1:1 into train/valid/test (random, global or per-user chronological), GX-validated.",
        func="assets.split:run",
        deps=("artifacts/ingest/{dataset}",),
        outs=("artifacts/split/{dataset}",),
        params=("data.name", "split"),
        code=("assets/split.py", "assets/validation.py"),
        check="assets.split:check",
    ),
)


def get_stage(name: str) -> Stage:
    """The stage called ``name``; raises KeyError listing the known names."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage '{name}'; known stages: {', '.join(s.name for s in STAGES)}")


def upstream(stage: Stage) -> list[str]:
    """Names of the stages whose outputs ``stage`` reads."""
    return [
        other.name
        for other in STAGES
        if other is not stage and any(_inside(d, o) for d in stage.deps for o in other.outs)
    ]
