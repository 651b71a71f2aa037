"""Drift monitoring: served traffic written to the prediction log, the drift stage run by Dagster with
its asset check, the drift history in an Evidently workspace, and the sensors that re-run drift when the
log grows and retrain when the check fails.

Unshifted traffic (held-out rows of the same population, scored by the served model) must pass in
every segment; traffic whose long-tail-user x head-item segment has a changed age mix must fail the
check for that segment while the untouched segments pass, and that failure (only that one) must ask for
the ``retrain`` job of the dataset's partition.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from assets.bento import registered_model_dir
from assets.bento import run as register
from assets.drift import SUMMARY, current_traffic, log_dir
from assets.drift_history import DRIFT_METRIC, project_name
from assets.prediction_log import PredictionLog
from models.metrics import longtail_mask
from models.predictor import Predictor
from orchestration.definitions import Project, defs
from orchestration.monitoring import DRIFT, DRIFT_CHECK
from tests.fixtures_serving import DATASET, bentoml_home, build_project
from tests.fixtures_tables import scenario_of

ROOT = Path(__file__).resolve().parents[1]
SHIFTED = "lt_user&head_item"
UNTOUCHED = ("head_user&head_item", "head_user&lt_item")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A trained project with a registered model; params.yaml written into it for Dagster."""
    root = tmp_path_factory.mktemp("drift")
    with bentoml_home(root / "bentoml_home"):
        params = build_project(root, n_rows=50_000, epochs=1)  # the model's quality does not matter here
        register(params, root)
    params["drift"]["reference_rows"] = 10_000
    params["drift"]["rerun_rows"] = 100
    (root / "params.yaml").write_text(yaml.safe_dump(dict(params)), encoding="utf-8")
    splits = {
        n: pd.read_parquet(root / "artifacts" / "split" / DATASET / f"{n}.parquet") for n in ("train", "valid", "test")
    }
    return {
        "root": root,
        "params": params,
        "splits": splits,
        "predictor": Predictor.load(registered_model_dir(root, DATASET)),
    }


def serve_into_log(project, frame: pd.DataFrame) -> Path:
    """Score ``frame`` as the service does and write it to a fresh prediction log."""
    directory = log_dir(project["params"], project["root"], DATASET)
    shutil.rmtree(directory, ignore_errors=True)
    records = json.loads(frame.to_json(orient="records"))
    fields = project["predictor"].fields
    log = PredictionLog(directory, flush_seconds=0.05)
    for start in range(0, len(records), 1000):
        batch = [{k: r[k] for k in fields} for r in records[start : start + 1000]]
        log.append(batch, project["predictor"].predict_records(batch).tolist(), "llm4ctr-ctr:test")
    log.close()
    assert log.stats["written"] == len(records)
    return directory


def materialize_drift(root: Path, instance: dg.DagsterInstance) -> dict:
    """The drift asset and its check, run by Dagster on ``instance``: the check's evaluation, the
    asset's materialization metadata and the summary.json written."""
    check = next(c for c in defs.asset_checks if DRIFT_CHECK in c.check_keys)
    result = dg.materialize(
        [defs.get_assets_def("drift"), check],
        partition_key=DATASET,
        resources={"project": Project(root=str(root))},
        instance=instance,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    (materialization,) = result.get_asset_materialization_events()
    return {
        "evaluation": evaluation,
        "metadata": materialization.materialization.metadata,
        "summary": json.loads((root / "artifacts" / "drift" / DATASET / SUMMARY).read_text()),
    }


def retrain_requests(instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    """One evaluation of the ``retrain_on_drift`` sensor on ``instance``: its run requests and new cursor."""
    sensor = next(s for s in defs.sensors if s.name == "retrain_on_drift")
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return list(sensor(context) or []), context.cursor


def age_shifted(traffic: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """``traffic`` whose long-tail users on head items (the SHIFTED segment) all look young."""
    segment = longtail_mask(train["user_id"].value_counts(), traffic["user_id"], 0.2) & ~longtail_mask(
        train["item_id"].value_counts(), traffic["item_id"], 0.2
    )
    shifted = traffic.copy()
    shifted.loc[segment, "age"] = np.random.default_rng(0).integers(18, 25, int(segment.sum()))
    shifted["scenario"] = scenario_of(shifted["age"])
    return shifted


@pytest.fixture(scope="module")
def monitored(project):
    """Two drift runs on one Dagster instance, unshifted then age-shifted traffic, each followed by an
    evaluation of the retrain sensor (and one more after the second)."""
    root, splits = project["root"], project["splits"]
    traffic = pd.concat([splits["valid"], splits["test"]], ignore_index=True)
    instance = dg.DagsterInstance.ephemeral()
    serve_into_log(project, traffic)
    unshifted = materialize_drift(root, instance)
    unshifted["requests"], cursor = retrain_requests(instance, None)
    serve_into_log(project, age_shifted(traffic, splits["train"]))
    shifted = materialize_drift(root, instance)
    shifted["requests"], cursor = retrain_requests(instance, cursor)
    again, cursor = retrain_requests(instance, cursor)
    return {"traffic": traffic, "instance": instance, "unshifted": unshifted, "shifted": shifted,
            "again": again, "cursor": cursor}  # fmt: skip


def test_unshifted_traffic_passes_and_an_age_shifted_segment_fails(project, monitored):
    root, traffic = project["root"], monitored["traffic"]
    evaluation, summary = monitored["unshifted"]["evaluation"], monitored["unshifted"]["summary"]
    assert summary["source"] == "log" and summary["segments"]["overall"]["rows_current"] == len(traffic)
    tested = {name: s for name, s in summary["segments"].items() if s["tested"]}
    assert {"overall", SHIFTED, *UNTOUCHED} <= set(tested)
    assert all(not s["drifted"] and s["share"] < summary["drift_share"] for s in tested.values()), tested
    assert evaluation.passed
    out = root / "artifacts" / "drift" / DATASET
    assert (out / "overall.html").stat().st_size > 10_000 and (out / "lt_user-head_item.json").is_file()
    assert set(summary["columns"]) == {"scenario", "gender", "age", "occupation", "genres", "year", "prediction"}

    evaluation, segments = monitored["shifted"]["evaluation"], monitored["shifted"]["summary"]["segments"]
    assert not evaluation.passed
    assert segments[SHIFTED]["drifted"] and {"age", "scenario"} <= set(segments[SHIFTED]["drifted_columns"])
    # Evidently's own count agrees with the failed per-column tests
    assert segments[SHIFTED]["n_drifted"] == len(segments[SHIFTED]["drifted_columns"])
    assert segments[SHIFTED]["share"] == pytest.approx(segments[SHIFTED]["n_drifted"] / 7, abs=1e-6)
    assert all(not segments[name]["drifted"] for name in UNTOUCHED), {n: segments[n] for n in UNTOUCHED}
    failing = evaluation.metadata["drifted_segments"].value
    assert SHIFTED in failing and not set(UNTOUCHED) & set(failing)
    assert evaluation.metadata["drifted_share"].value[SHIFTED] >= 0.25


def test_stage_metadata_has_a_number_per_segment_report_links_and_the_evidently_project(project, monitored):
    root = project["root"]
    for run in ("unshifted", "shifted"):
        metadata, summary = monitored[run]["metadata"], monitored[run]["summary"]
        tested = {name: s for name, s in summary["segments"].items() if s["tested"]}
        for name, segment in summary["segments"].items():
            key = f"drifted_share_{name.replace('&', '-')}"
            if name in tested:  # a float: Dagster's Plots tab draws it run after run
                assert isinstance(metadata[key], dg.FloatMetadataValue) and metadata[key].value == segment["share"]
                report = Path(metadata[f"report_{name.replace('&', '-')}"].value)
                assert report == (root / "artifacts" / "drift" / DATASET / f"{name.replace('&', '-')}.html").resolve()
                assert report.is_file()
            else:
                assert key not in metadata
        assert metadata["drifted_segments_count"].value == sum(s["drifted"] for s in tested.values())
        assert "| segment |" in metadata["segments"].value
        assert isinstance(metadata["evidently"], dg.UrlMetadataValue)
    project_id = monitored["shifted"]["metadata"]["evidently_project"].value
    assert monitored["unshifted"]["metadata"]["evidently_project"].value == project_id  # found by name
    assert monitored["shifted"]["metadata"]["evidently"].value == f"http://127.0.0.1:8000/projects/{project_id}"
    assert monitored["shifted"]["metadata"]["drifted_segments_count"].value >= 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def evidently_ui(workspace: Path):
    """``evidently ui`` on 127.0.0.1 over ``workspace`` (as `make drift-ui` starts it); yields its URL."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(workspace)]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "DO_NOT_TRACK": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/projects", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "evidently ui did not start"
                time.sleep(0.5)
        yield url
    finally:
        os.kill(server.pid, 15)
        server.wait(timeout=30)


def api(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_every_run_adds_its_segments_to_the_evidently_history_its_dashboard_plots(project, monitored):
    workspace = project["root"] / "artifacts" / "evidently"
    project_id = monitored["shifted"]["metadata"]["evidently_project"].value
    tested = [n for n, s in monitored["shifted"]["summary"]["segments"].items() if s["tested"]]
    with evidently_ui(workspace) as url:
        assert [p["name"] for p in api(f"{url}/api/projects")] == [project_name(DATASET)]
        reports = api(f"{url}/api/projects/{project_id}/reports")
        assert sorted(r["metadata"]["segment"] for r in reports) == sorted(tested * 2)  # two runs
        assert all(r["metadata"]["model"] in r["tags"] and r["metadata"]["segment"] in r["tags"] for r in reports)
        panels = {p["title"]: p for p in api(f"{url}/api/v2/dashboards/{project_id}")["panels"]}
        assert len(panels) == len(monitored["shifted"]["summary"]["segments"])  # one per segment
        (value,) = panels[f"{SHIFTED}: share of drifted columns"]["values"]
        assert value["metric"].endswith(DRIFT_METRIC) and value["tags"] == [SHIFTED]
        series = api(
            f"{url}/api/v2/snapshots/{project_id}/data_series_batch",
            {"series_filter": [{k: value[k] for k in ("tags", "metadata", "metric", "metric_labels")}]},
        )
    (line,) = series["series"]
    shares = [monitored[run]["summary"]["segments"][SHIFTED]["share"] for run in ("unshifted", "shifted")]
    assert line["values"] == pytest.approx(shares, abs=1e-6) and shares[0] < 0.25 <= shares[1]


def test_a_failed_drift_check_asks_once_for_the_retrain_job_of_its_partition(project, monitored):
    sensor = next(s for s in defs.sensors if s.name == "retrain_on_drift")
    assert sensor.job_name == "retrain" and sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert monitored["unshifted"]["requests"] == []  # the check passed
    (request,) = monitored["shifted"]["requests"]
    assert request.partition_key == DATASET and request.job_name is None  # the sensor's job: retrain
    assert monitored["again"] == []  # once per failing evaluation

    # the retrain job's own drift step still fails on the same traffic: that starts no further retrain
    instance = monitored["instance"]
    serve_into_log(project, age_shifted(monitored["traffic"], project["splits"]["train"]))
    here = dg.Definitions(  # the project's jobs, with the test project as the resource
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        resources={"project": Project(root=str(project["root"]))},
    )
    result = here.resolve_job_def("retrain").execute_in_process(
        partition_key=DATASET, instance=instance, asset_selection=[DRIFT]
    )
    assert [e.passed for e in result.get_asset_check_evaluations()] == [False]
    requests, cursor = retrain_requests(instance, monitored["cursor"])
    assert requests == []
    # a later drift run (the log sensor's, on new traffic) that still fails asks again
    assert not materialize_drift(project["root"], instance)["evaluation"].passed
    assert [r.partition_key for r in retrain_requests(instance, cursor)[0]] == [DATASET]


def test_a_history_that_cannot_be_written_leaves_the_new_outputs_in_place(project, tmp_path: Path):
    from assets.drift import run as drift_run

    params, root = project["params"], project["root"]
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the workspace should be")
    broken = type(params)({**params, "drift": {**params["drift"], "workspace": str(blocked)}})
    summary = root / "artifacts" / "drift" / DATASET / SUMMARY
    summary.unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match=r"not-a-folder \(drift.workspace\).*drift outputs themselves are written"):
        drift_run(broken, root)
    assert json.loads(summary.read_text())["dataset"] == DATASET  # this run's outputs, complete


def test_without_traffic_the_test_split_is_compared(project, tmp_path: Path):
    params = project["params"]
    empty = {**params, "serve": {**params["serve"], "log_dir": str(tmp_path / "none")}}
    empty = type(params)(empty)
    current, source = current_traffic(empty, project["root"], DATASET, project["splits"]["test"], project["predictor"])
    assert source == "test" and len(current) == len(project["splits"]["test"])
    np.testing.assert_allclose(current["prediction"], project["predictor"].predict_frame(project["splits"]["test"]))


def test_sensor_requests_a_drift_run_when_the_log_grew(project):
    sensor = next(s for s in defs.sensors if s.name == "drift_on_log_growth")
    directory = log_dir(project["params"], project["root"], DATASET)
    shutil.rmtree(directory, ignore_errors=True)
    resources = {"project": Project(root=str(project["root"]))}

    def evaluate(cursor):
        context = dg.build_sensor_context(cursor=cursor, resources=resources)
        return list(sensor(context)), context.cursor

    runs, cursor = evaluate(None)
    assert runs == []
    log = PredictionLog(directory, flush_seconds=0.05)
    log.append([{"user_id": "1"}] * 60, [0.5] * 60, "m:1")
    log.close()
    runs, cursor = evaluate(cursor)
    assert runs == []  # 60 < drift.rerun_rows (100): keeps counting
    log = PredictionLog(directory, flush_seconds=0.05)
    log.append([{"user_id": "2"}] * 50, [0.5] * 50, "m:1")
    log.close()
    runs, cursor = evaluate(cursor)
    assert [r.partition_key for r in runs] == [DATASET]
    assert runs[0].asset_selection is None or dg.AssetKey(["drift"]) in runs[0].asset_selection
    assert evaluate(cursor)[0] == []  # nothing new since


def test_make_drift_ui_serves_the_workspace_the_stage_links_to():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["drift"]
    shown = subprocess.run(
        ["make", "-n", "--no-print-directory", "drift-ui"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    command = shown.stdout.strip().splitlines()[-1].split()
    assert command[:2] == ["evidently", "ui"]
    options = dict(zip(command[2::2], command[3::2]))
    assert options["--workspace"] == params["workspace"] and options["--host"] == "127.0.0.1"
    assert params["ui_url"] == f"http://127.0.0.1:{options['--port']}"
