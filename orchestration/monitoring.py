"""Dagster monitoring of the served CTR model: the drift asset's check, the sensor that re-runs drift and
the sensor that retrains when drift is found.

* ``drift_share`` (asset check on ``drift``, per dataset partition when given the assets' partitions):
  fails when any tested segment of the last drift run (overall or a long-tail segment) has a
  drifted-column share of at least ``drift.drift_share``; its metadata shows every tested segment's
  share, the drifted segments and their drifted columns.
* ``drift_on_log_growth`` (sensor): every ``INTERVAL_S`` seconds, counts the predictions the service
  appended to ``<serve.log_dir>/<dataset>/`` since the last drift run it requested (reading only the
  new bytes), and asks for a ``drift`` run of that dataset's partition once ``drift.rerun_rows`` have
  accumulated. Its cursor holds the log file sizes per dataset.
* ``retrain_on_drift`` (sensor): every ``INTERVAL_S`` seconds, reads the latest ``drift_share``
  evaluation of each dataset partition from the Dagster instance and, when it failed, requests the
  ``retrain`` job for that partition, once per failing evaluation (its cursor holds the last
  evaluation acted on per dataset). A failure found by a ``retrain`` run itself starts nothing:
  retraining on the same training data again would not change what the served traffic looks like,
  so the next retrain waits for a drift run on new traffic (``drift_on_log_growth``) that still fails.

Both sensors are off by default, as Dagster sensors usually are: turn them on in the UI (Automation)
or with ``dagster sensor start drift_on_log_growth`` / ``dagster sensor start retrain_on_drift``
(the ``dagster-daemon`` that `make ui` starts then evaluates them).

The ``project`` resource is taken by key, so this module does not import definitions.py.
"""

import json
from pathlib import Path

import dagster as dg

DRIFT = dg.AssetKey(["drift"])
DRIFT_CHECK = dg.AssetCheckKey(DRIFT, "drift_share")
RETRAIN_JOB = "retrain"
INTERVAL_S = 60


def drift_check(partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    """The drifted-column-share check of the ``drift`` asset, partitioned like the assets
    (``partitions_def``): each dataset's verdict is recorded under its own partition."""

    @dg.asset_check(
        asset=DRIFT,
        name=DRIFT_CHECK.name,
        required_resource_keys={"project"},
        description="Fails when a segment's share of drifted columns reaches drift.drift_share",
        partitions_def=partitions_def,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        from assets.drift import drifted_segments, read_summary, segments_table, shares

        project = context.resources.project
        dataset = context.partition_key
        summary = read_summary(project.params(dataset), Path(project.root))
        failing = drifted_segments(summary)
        return dg.AssetCheckResult(
            passed=not failing,
            metadata={
                "dataset": dataset,
                "source": summary["source"],
                "threshold": summary["drift_share"],
                "drifted_share": dg.MetadataValue.json(shares(summary)),
                "drifted_segments": dg.MetadataValue.json(
                    {name: summary["segments"][name]["drifted_columns"] for name in failing}
                ),
                "segments": dg.MetadataValue.md(segments_table(summary)),
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


def failed_drift_checks(instance: dg.DagsterInstance) -> list[tuple[str, int, dg.DagsterRun | None]]:
    """(dataset, evaluation's storage id, its run) for each dataset partition whose latest
    ``drift_share`` evaluation failed."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    failed = []
    for info in instance.event_log_storage.get_asset_check_partition_info([DRIFT_CHECK]):
        if info.latest_execution_status != AssetCheckExecutionRecordStatus.FAILED:
            continue  # passed, still running, or the check itself errored: no drift verdict to act on
        run = instance.get_run_by_id(info.latest_planned_run_id)
        if info.partition_key:
            failed.append((info.partition_key, info.latest_check_event_storage_id, run))
    return failed


def retrain_sensor() -> dg.SensorDefinition:
    """Requests the ``retrain`` job for a dataset whose latest ``drift_share`` evaluation failed."""

    @dg.sensor(
        name="retrain_on_drift",
        job_name=RETRAIN_JOB,
        minimum_interval_seconds=INTERVAL_S,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Run the retrain job for a dataset whose drift_share check failed (once per failing evaluation)",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        for dataset, storage_id, run in failed_drift_checks(context.instance):
            if storage_id <= cursor.get(dataset, 0):
                continue
            cursor[dataset] = storage_id
            if run is not None and run.job_name == RETRAIN_JOB:
                continue  # the retrained model's own drift verdict: wait for new traffic
            yield dg.RunRequest(
                run_key=f"retrain-{dataset}-{storage_id}",
                partition_key=dataset,
                tags={"trigger": f"drift_share failed (run {run.run_id if run else 'unknown'})"},
            )
        context.update_cursor(json.dumps(cursor, sort_keys=True))

    return _sensor
