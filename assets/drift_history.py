"""Drift history: every drift run's Evidently snapshots, kept in a local Evidently workspace so that
`make drift-ui` (``evidently ui --workspace <drift.workspace>``) shows how each segment drifted over time.

The workspace (``drift.workspace``, artifacts/evidently/ by default) holds one Evidently project per
dataset, named ``<dataset> drift``: created on first use with a dashboard of one line panel per segment
(the share of drifted columns of Evidently's own ``DriftedColumnsCount`` metric, run after run), and
found by that name afterwards. Each snapshot is tagged with its segment and the served model's tag and
carries the dataset, segment, model and traffic source as metadata, so the UI can filter by either.

Like the prediction log, the workspace is history, not a DVC output: the drift stage appends to it only
after its own output folder is in place, and no stage ever removes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4ctr.params import Params

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

DRIFT_METRIC = "DriftedColumnsCount"


def project_name(dataset: str) -> str:
    """The Evidently project that holds ``dataset``'s drift history."""
    return f"{dataset} drift"


def labels(segment: str, run: dict[str, str]) -> dict[str, Any]:
    """``Report.run`` keywords that label a segment's snapshot: tags (segment, model tag) and metadata.

    ``run`` holds the run's ``dataset``, ``model`` (the served model's tag) and ``source``; the
    dashboard's panels select a segment's snapshots by its tag."""
    return {"tags": [segment, run["model"]], "metadata": {**run, "segment": segment}}


def _project(workspace, dataset: str, segments: list[str]):
    """The dataset's project, created (with a drifted-share panel per segment) when it does not exist."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    found = workspace.search_project(project_name(dataset))
    if found:
        return found[0]
    project = workspace.create_project(
        project_name(dataset),
        description=f"Drift of the {dataset} CTR service's traffic against its training data (llm4ctr drift stage)",
    )
    for segment in segments:
        share = PanelMetric(legend=segment, metric=DRIFT_METRIC, metric_labels={"value_type": "share"}, tags=[segment])
        project.dashboard.add_panel(line_plot_panel(title=f"{segment}: share of drifted columns", values=[share]))
    return project


def record(params: Params, root: Path, dataset: str, segments: list[str], snapshots: list[Snapshot]) -> dict[str, str]:
    """Add ``snapshots`` to ``dataset``'s project in the ``drift.workspace`` workspace (under ``root``).

    ``segments`` names every segment the stage reports (a dashboard panel each when the project is
    new). Returns the project's id and its page in the UI (``drift.ui_url``, where `make drift-ui`
    serves it)."""
    from evidently.ui.workspace import Workspace

    cfg = params.get_path("drift")
    path = Path(root) / cfg["workspace"]
    try:
        workspace = Workspace(str(path))
        project = _project(workspace, dataset, segments)
        for snapshot in snapshots:
            workspace.add_run(project.id, snapshot)
    except Exception as exc:  # the stage's outputs are already in place: say so, and what failed
        raise RuntimeError(
            f"drift history: cannot add {len(snapshots)} reports to the Evidently workspace {path} "
            f"(drift.workspace): {type(exc).__name__}: {exc}; the drift outputs themselves are written"
        ) from exc
    return {"project": str(project.id), "url": f"{str(cfg['ui_url']).rstrip('/')}/projects/{project.id}"}
