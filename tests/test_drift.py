"""Drift monitoring: served traffic written to the prediction log, the drift stage run by Dagster with
its asset check, and the sensor that re-runs it when the log grows.

Unshifted traffic (held-out rows of the same population, scored by the served model) must pass in
every segment; traffic whose long-tail-user x head-item segment has a changed age mix must fail the
check for that segment while the untouched segments pass.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from assets.bento import registered_model_dir
from assets.bento import run as register
from assets.drift import SUMMARY, current_traffic, log_dir
from assets.prediction_log import PredictionLog
from models.metrics import longtail_mask
from models.predictor import Predictor
from orchestration.definitions import Project, defs
from tests.fixtures_serving import DATASET, bentoml_home, build_project
from tests.fixtures_tables import scenario_of

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


def materialize_drift(root: Path):
    check = next(c for c in defs.asset_checks if "drift_share" in {k.name for k in c.check_keys})
    result = dg.materialize(
        [defs.get_assets_def("drift"), check],
        partition_key=DATASET,
        resources={"project": Project(root=str(root))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    (evaluation,) = result.get_asset_check_evaluations()
    summary = json.loads((root / "artifacts" / "drift" / DATASET / SUMMARY).read_text())
    return evaluation, summary


def test_unshifted_traffic_passes_and_an_age_shifted_segment_fails(project):
    root, splits = project["root"], project["splits"]
    traffic = pd.concat([splits["valid"], splits["test"]], ignore_index=True)

    serve_into_log(project, traffic)
    evaluation, summary = materialize_drift(root)
    assert summary["source"] == "log" and summary["segments"]["overall"]["rows_current"] == len(traffic)
    tested = {name: s for name, s in summary["segments"].items() if s["tested"]}
    assert {"overall", SHIFTED, *UNTOUCHED} <= set(tested)
    assert all(not s["drifted"] and s["share"] < summary["drift_share"] for s in tested.values()), tested
    assert evaluation.passed
    out = root / "artifacts" / "drift" / DATASET
    assert (out / "overall.html").stat().st_size > 10_000 and (out / "lt_user-head_item.json").is_file()
    assert set(summary["columns"]) == {"scenario", "gender", "age", "occupation", "genres", "year", "prediction"}

    # the long-tail users of one segment now all look young (a changed age mix)
    train = splits["train"]
    segment = longtail_mask(train["user_id"].value_counts(), traffic["user_id"], 0.2) & ~longtail_mask(
        train["item_id"].value_counts(), traffic["item_id"], 0.2
    )
    shifted = traffic.copy()
    shifted.loc[segment, "age"] = np.random.default_rng(0).integers(18, 25, int(segment.sum()))
    shifted["scenario"] = scenario_of(shifted["age"])
    serve_into_log(project, shifted)
    evaluation, summary = materialize_drift(root)
    segments = summary["segments"]
    assert not evaluation.passed
    assert segments[SHIFTED]["drifted"] and {"age", "scenario"} <= set(segments[SHIFTED]["drifted_columns"])
    assert all(not segments[name]["drifted"] for name in UNTOUCHED), {n: segments[n] for n in UNTOUCHED}
    failing = evaluation.metadata["drifted_segments"].value
    assert SHIFTED in failing and not set(UNTOUCHED) & set(failing)
    assert evaluation.metadata["drifted_share"].value[SHIFTED] >= summary["drift_share"]


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
