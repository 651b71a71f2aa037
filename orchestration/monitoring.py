"""Dagster monitoring of the served CTR model: the drift asset's check and the sensor that re-runs it.

* ``drift_share`` (asset check on ``drift``): fails when any tested segment of the last drift run
  (overall or a long-tail segment) has a drifted-column share of at least ``drift.drift_share``;
  its metadata shows every segment's share, the drifted segments and their drifted columns.
* ``drift_on_log_growth`` (sensor): every ``INTERVAL_S`` seconds, counts the predictions the service
  appended to ``<serve.log_dir>/<dataset>/`` since the last drift run it requested (reading only the
  new bytes), and asks for a ``drift`` run of that dataset's partition once ``drift.rerun_rows`` have
  accumulated. Its cursor holds the log file sizes per dataset. Off by default (turn it on in the UI
  or with ``dagster sensor start drift_on_log_growth``), as Dagster sensors usually are.

The ``project`` resource is taken by key, so this module does not import definitions.py.
"""

import json
from pathlib import Path

import dagster as dg

DRIFT = dg.AssetKey(["drift"])
INTERVAL_S = 60


def drift_check() -> dg.AssetChecksDefinition:
    """The drifted-column-share check of the ``drift`` asset."""

    @dg.asset_check(
        asset=DRIFT,
        name="drift_share",
        required_resource_keys={"project"},
        description="Fails when a segment's share of drifted columns reaches drift.drift_share",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        from assets.drift import metadata, read_summary

        project = context.resources.project
        dataset = context.run.tags.get("dagster/partition") or project.default_dataset()
        summary = read_summary(project.params(dataset), Path(project.root))
        figures = metadata(summary)
        failing = figures["drifted_segments"]
        details = {name: summary["segments"][name]["drifted_columns"] for name in failing}
        return dg.AssetCheckResult(
            passed=not failing,
            metadata={
                "dataset": dataset,
                "source": summary["source"],
                "threshold": summary["drift_share"],
                "drifted_share": dg.MetadataValue.json(figures["drifted_share"]),
                "drifted_segments": dg.MetadataValue.json(details),
                "segments": dg.MetadataValue.md(figures["segments_md"]),
            },
        )

    return _check


def drift_sensor(datasets: list[str]) -> dg.SensorDefinition:
    """Requests a ``drift`` run for a dataset once its prediction log grew by ``drift.rerun_rows`` lines."""

    @dg.sensor(
        name="drift_on_log_growth",
        target=dg.AssetSelection.assets(DRIFT),
        minimum_interval_seconds=INTERVAL_S,
        description="Re-run drift (and its check) when the service has logged drift.rerun_rows new predictions",
    )
    def _sensor(context: dg.SensorEvaluationContext, project: dg.ConfigurableResource):
        from assets.drift import log_dir
        from assets.prediction_log import new_rows

        cursor = json.loads(context.cursor) if context.cursor else {}
        for dataset in datasets:
            params = project.params(dataset)
            rows, sizes = new_rows(log_dir(params, Path(project.root), dataset), cursor.get(dataset, {}))
            if rows and rows >= int(params.get_path("drift.rerun_rows")):
                cursor[dataset] = sizes
                yield dg.RunRequest(
                    run_key=f"drift-{dataset}-{sum(sizes.values())}",
                    partition_key=dataset,
                    tags={"trigger": f"{rows} new predictions"},
                )
        context.update_cursor(json.dumps(cursor, sort_keys=True))

    return _sensor
