"""Dagster definitions: every registry stage as a partitioned asset, its GX suite as a blocking check.

Assets are generated from assets/registry.py (the same list dvc.yaml is generated from), so the UI
and `dvc repro` always show one DAG. The dataset is a static partition; each asset calls the pure
stage function with params.yaml plus ``data.name = <partition>``, and shows the stage's figures as
metadata. A failing check blocks everything downstream.
"""

from pathlib import Path
from typing import Any

import dagster as dg

import orchestration  # noqa: F401  (telemetry off, offline hub)
from assets.registry import STAGES, Stage, upstream
from llm4ctr.params import PARAMS_FILE, Params, load_params

DATASETS = ["ml-100k", "ml-1m", "bookcrossing", "amazon"]
datasets = dg.StaticPartitionsDefinition(DATASETS)


class Project(dg.ConfigurableResource):
    """Where the project lives: the root that holds params.yaml, data/ and artifacts/."""

    root: str = "."
    params_file: str = PARAMS_FILE

    def params(self, dataset: str) -> Params:
        return load_params(Path(self.root) / self.params_file, {"data.name": dataset})

    def default_dataset(self) -> str:
        """params.yaml's data.name: the dataset a run without a partition key works on."""
        return load_params(Path(self.root) / self.params_file).get_path("data.name")


def to_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """Stage metadata -> Dagster metadata: ``*_md`` keys render as markdown, containers as JSON."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key.endswith("_md"):
            out[key[:-3]] = dg.MetadataValue.md(value)
        elif isinstance(value, (dict, list)):
            out[key] = dg.MetadataValue.json(value)
        elif value is None:
            out[key] = dg.MetadataValue.text("-")
        else:
            out[key] = value
    return out


def stage_asset(stage: Stage) -> dg.AssetsDefinition:
    """A partitioned asset that runs ``stage`` for the partition's dataset."""

    @dg.asset(
        name=stage.name,
        description=stage.description,
        deps=upstream(stage),
        partitions_def=datasets,
        group_name="pipeline",
        kinds={"python"},
    )
    def _asset(context: dg.AssetExecutionContext, project: Project) -> dg.MaterializeResult:
        params = project.params(context.partition_key)
        return dg.MaterializeResult(metadata=to_metadata(stage.resolve()(params, Path(project.root))))

    return _asset


def stage_check(stage: Stage) -> dg.AssetChecksDefinition:
    """A blocking check that re-runs the stage's GX suites on its written outputs."""

    @dg.asset_check(asset=stage.name, name=f"{stage.name}_gx_suite", blocking=True, description=f"Great Expectations suites of `{stage.name}`")
    def _check(context: dg.AssetCheckExecutionContext, project: Project) -> dg.AssetCheckResult:
        dataset = context.run.tags.get("dagster/partition") or project.default_dataset()
        report = stage.resolve("check")(project.params(dataset), Path(project.root))
        return dg.AssetCheckResult(
            passed=bool(report.success),
            metadata={"dataset": dataset, "summary": dg.MetadataValue.md(report.summary or "all expectations passed")},
        )

    return _check


defs = dg.Definitions(
    assets=[stage_asset(s) for s in STAGES],
    asset_checks=[stage_check(s) for s in STAGES if s.check],
    resources={"project": Project()},
)
