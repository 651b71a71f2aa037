"""Serving building blocks without a server: the record encoder, the predictor, the request schema,
the request guard, the prediction log, the serving settings and counters; BentoML's public API only."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError, create_model

from assets.prediction_log import PredictionLog, log_sizes, new_rows, read_log
from models.ctr import build_model
from models.features import OOV, FeatureEncoder, default_spec
from models.predictor import Predictor, RecordEncoder
from models.trainer import TrainConfig, Trainer
from serving.guard import RequestGuard
from serving.schemas import record_model, records_type
from tests.fixtures_ctr import TINY
from tests.fixtures_tables import make_interactions, split


def records_of(frame: pd.DataFrame) -> list[dict]:
    """Rows as a JSON client sends them (NA -> null, Int64 -> int)."""
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture(scope="module")
def fitted():
    train, _, test = split(make_interactions(n_rows=1500, seed=3))
    encoder = FeatureEncoder.fit(train, default_spec(train.columns), min_count=2)
    return encoder, train, test


def hostile_frame(test: pd.DataFrame) -> pd.DataFrame:
    """Test rows plus every awkward value the encoder must treat like transform does."""
    odd = test.head(12).copy()
    odd["user_id"] = ["-5", " 1 ", "999999", "", "üñí", "1", "2", "3", "4", "5", "6", "7"]
    odd["gender"] = ["F", " M", None, "X", "F", "M", "", "F", "M", "F", "M", "F"]
    odd["genres"] = [
        "Drama| Comedy ",
        "||",
        None,
        "Nope|Drama",
        "",
        "Comedy",
        "Action|Drama|Horror|War|Sci-Fi",
        "Drama",
        "Comedy|Comedy",
        " ",
        "Horror|",
        "|Drama",
    ]
    odd["age"] = pd.array([None, 0, -3, 200, 25, 18, 64, 40, 30, 33, 21, 99], dtype="Int64")
    odd["year"] = pd.array([None, 1900, 2100, 1980, 1990, 1950, 2000, 1999, 1970, 1960, 1985, 1995], dtype="Int64")
    return pd.concat([test, odd], ignore_index=True)


def test_record_encoder_matches_frame_transform_exactly(fitted):
    encoder, _, test = fitted
    frame = hostile_frame(test)
    expected = encoder.transform(frame)
    got = RecordEncoder(encoder).transform(records_of(frame))
    assert set(got) == set(expected) - {"label"}
    for name, array in got.items():
        assert array.dtype == np.int64 and array.shape == expected[name].shape, name
        np.testing.assert_array_equal(array, expected[name], err_msg=name)
    negative, padded, unknown, empty = got["user_id"][-12:-8]
    assert negative == unknown == empty == OOV and padded == got["user_id"][-7]  # " 1 " is "1"
    # integers and strings of the same id encode alike; a record without a field is all OOV there
    as_ints = RecordEncoder(encoder).transform([{"user_id": int(test["user_id"].iloc[0])}, {}])
    assert as_ints["user_id"][0] == expected["user_id"][0]
    assert all((v[1] == OOV).all() if v.ndim == 1 else v[1, 0] == OOV for v in as_ints.values())


def test_predictor_records_equal_frames_equal_the_trainer(fitted):
    encoder, train, test = fitted
    model = build_model("dcnv2", encoder.vocab_sizes, **TINY["dcnv2"])
    trainer = Trainer(model, TrainConfig(progress=False, num_threads=1))
    predictor = Predictor(encoder, model, batch_size=64)  # several chunks
    frame = hostile_frame(test)
    offline = trainer.predict(encoder.transform(frame))
    np.testing.assert_allclose(predictor.predict_frame(frame), offline, rtol=0, atol=1e-6)
    np.testing.assert_allclose(predictor.predict_records(records_of(frame)), offline, rtol=0, atol=1e-6)
    assert predictor.predict_records([]).shape == (0,)
    assert predictor.fields == encoder.spec.names


def test_predictor_loads_a_saved_checkpoint(tmp_path: Path, fitted):
    from models.trainer import save_model

    encoder, _, test = fitted
    model = build_model("fm", encoder.vocab_sizes, **TINY["fm"])
    save_model(model, tmp_path)
    encoder.save(tmp_path)
    loaded = Predictor.load(tmp_path)
    expected = Predictor(encoder, model).predict_frame(test)
    np.testing.assert_array_equal(loaded.predict_frame(test), expected)


FIELDS = [
    {"name": "user_id", "kind": "categorical"},
    {"name": "item_id", "kind": "categorical"},
    {"name": "gender", "kind": "categorical"},
    {"name": "age", "kind": "numeric"},
    {"name": "genres", "kind": "multi"},
]


def request_model(max_records: int = 3):
    record = record_model(FIELDS)
    return create_model("Input", records=(records_type(record, max_records), ...))


def errors(model, body: str) -> list[tuple]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(body)
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_request_schema_accepts_raw_rows_and_names_bad_fields():
    model = request_model()
    good = {"user_id": "1", "item_id": 7, "gender": None, "age": 25, "genres": "Drama", "title": "ignored"}
    parsed = model.model_validate_json(json.dumps({"records": [good, {**good, "user_id": -3, "age": 25.5}]}))
    assert parsed.records[0] == {"user_id": "1", "item_id": 7, "gender": None, "age": 25, "genres": "Drama"}
    assert parsed.records[1]["user_id"] == -3  # negative id: valid input, scores as OOV
    assert errors(model, json.dumps({"records": []})) == [("records",)]
    assert errors(model, json.dumps({"records": [good] * 4})) == [("records",)]
    missing = {k: v for k, v in good.items() if k != "age"}
    assert errors(model, json.dumps({"records": [good, missing]})) == [("records", 1, "age")]
    for field, value in [
        ("user_id", True),
        ("user_id", None),
        ("item_id", [1]),
        ("gender", {"a": 1}),
        ("age", "25"),
        ("age", 1e300),
        ("user_id", 2**70),
        ("genres", "x" * 5000),
    ]:
        locs = errors(model, json.dumps({"records": [{**good, field: value}]}))
        assert locs and all(loc[:3] == ("records", 0, field) for loc in locs), (field, value, locs)
    assert errors(model, '{"records": [{"user_id": "1", "age": NaN}]}')  # non-finite numbers
    assert errors(model, '{"records": [') == [()]  # broken JSON


def call_guard(body: bytes, headers: list[tuple[bytes, bytes]], chunks: int = 1, limit: int = 100):
    """Run RequestGuard around a stub app; returns (status, body the app saw or None)."""
    seen, sent = {}, []

    async def app(scope, receive, send):
        message = await receive()
        seen["body"] = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    parts = [body[i::chunks] for i in range(chunks)] if chunks > 1 else [body]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    asyncio.run(RequestGuard(app, max_body_bytes=limit)(scope, receive, send))
    return sent[0]["status"], seen.get("body")


def test_request_guard_rejects_non_json_and_oversized_bodies():
    json_type = [(b"content-type", b"application/json; charset=utf-8")]
    assert call_guard(b"{}", json_type + [(b"content-length", b"2")]) == (200, b"{}")
    assert call_guard(b"{}", [(b"content-type", b"application/x-www-form-urlencoded")])[0] == 415
    assert call_guard(b"{}", [(b"content-type", b"multipart/form-data; boundary=x")])[0] == 415
    assert call_guard(b"x" * 101, json_type + [(b"content-length", b"101")]) == (413, None)
    assert call_guard(b"{}", json_type + [(b"content-length", b"two")])[0] == 400
    assert call_guard(b"x" * 100, json_type, chunks=3) == (200, b"x" * 100)  # chunked, replayed whole
    assert call_guard(b"x" * 101, json_type, chunks=3) == (413, None)


def test_prediction_log_appends_in_background_and_reads_back(tmp_path: Path):
    log = PredictionLog(tmp_path / "log", flush_seconds=0.05)
    feats = [{"user_id": "1", "age": 20}, {"user_id": "2", "age": None}]
    assert log.append(feats, [0.25, 0.75], "m:1")
    assert log.append(feats[:1], [0.5], "m:2")
    log.close()
    assert log.stats == {"written": 3, "dropped": 0, "errors": 0, "pending_batches": 0}
    (path,) = log_sizes(tmp_path / "log")
    with open(tmp_path / "log" / path, "a", encoding="utf-8") as handle:
        handle.write('{"time": 1, "prob": 0.')  # a line still being written
    frame = read_log(tmp_path / "log")
    assert frame["prob"].tolist() == [0.25, 0.75, 0.5]
    assert frame["user_id"].tolist() == ["1", "2", "1"] and frame["model_version"].tolist() == ["m:1", "m:1", "m:2"]
    assert read_log(tmp_path / "log", last=1)["prob"].tolist() == [0.5]
    assert read_log(tmp_path / "nowhere").empty
    count, sizes = new_rows(tmp_path / "log", {})
    assert count == 3 and new_rows(tmp_path / "log", sizes)[0] == 0


def test_prediction_log_never_blocks_or_raises(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    broken = PredictionLog(blocker / "log", flush_seconds=0.05)  # cannot create its directory
    assert broken.append([{"a": 1}], [0.1], "m:1")
    broken.close()
    assert broken.stats["errors"] >= 1 and broken.stats["dropped"] == 1 and broken.stats["written"] == 0

    full = PredictionLog(tmp_path / "full", max_pending=1, flush_seconds=0.05)
    started = time.perf_counter()
    accepted = [full.append([{"a": i}], [0.5], "m:1") for i in range(1000)]
    assert time.perf_counter() - started < 1.0  # put_nowait: never waits for the disk
    assert not all(accepted) and full.stats["dropped"] == accepted.count(False)


SERVE_PARAMS = """
serve:
  stage: train
  workers: 1
  torch_threads: 1
  max_batch_size: 1024
  max_latency_ms: 5000
  timeout_s: 30
  max_records: 4096
  max_body_bytes: 8388608
  log_dir: artifacts/predictions_log
  log_max_pending: 10000
  access_log: false
  metrics: true
  tracing: false
"""


def test_serving_settings_come_from_params_with_env_overrides(tmp_path: Path, monkeypatch):
    from serving import settings

    (tmp_path / "params.yaml").write_text(SERVE_PARAMS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert settings.load({}) == {
        "workers": 1,
        "torch_threads": 1,
        "max_batch_size": 1024,
        "max_latency_ms": 5000,
        "timeout_s": 30,
        "max_records": 4096,
        "max_body_bytes": 8388608,
        "log_dir": "artifacts/predictions_log",
        "log_max_pending": 10000,
        "access_log": False,
        "metrics": True,
        "tracing": False,
    }
    env = {"LLM4CTR_SERVE_WORKERS": "4", "LLM4CTR_SERVE_ACCESS_LOG": "Yes", "LLM4CTR_SERVE_TIMEOUT_S": "2.5"}
    got = settings.load(env)
    assert (got["workers"], got["access_log"], got["timeout_s"], got["max_records"]) == (4, True, 2.5, 4096)
    other = tmp_path / "deploy.yaml"
    other.write_text(SERVE_PARAMS.replace("workers: 1", "workers: 3"), encoding="utf-8")
    assert settings.load({"LLM4CTR_PARAMS": str(other)})["workers"] == 3
    assert settings.env_name("max_body_bytes") == "LLM4CTR_SERVE_MAX_BODY_BYTES"


@pytest.mark.parametrize(
    ("env", "params", "message"),
    [
        ({"LLM4CTR_SERVE_WORKERS": "four"}, SERVE_PARAMS, "SERVE_WORKERS: expected a positive integer, got 'four'"),
        ({"LLM4CTR_SERVE_WORKERS": "0"}, SERVE_PARAMS, "LLM4CTR_SERVE_WORKERS: expected a positive integer, got 0"),
        ({"LLM4CTR_SERVE_METRICS": "maybe"}, SERVE_PARAMS, "LLM4CTR_SERVE_METRICS: expected true or false"),
        ({"LLM4CTR_SERVE_TIMEOUT_S": "-1"}, SERVE_PARAMS, "LLM4CTR_SERVE_TIMEOUT_S: expected a positive number"),
        ({"LLM4CTR_SERVE_WORKER": "2"}, SERVE_PARAMS, "LLM4CTR_SERVE_WORKER: unknown serving setting"),
        ({}, SERVE_PARAMS.replace("workers: 1", "workers: true"), "serve.workers: expected a positive integer"),
        ({}, SERVE_PARAMS.replace("  tracing: false\n", ""), "serve.tracing is missing (or set LLM4CTR_SERVE_TRACING)"),
        ({}, "data: {}\n", "no `serve:` section"),
    ],
)
def test_serving_settings_errors_name_the_variable_or_key(tmp_path: Path, env, params, message):
    from llm4ctr.errors import ParamsError
    from serving import settings

    path = tmp_path / "params.yaml"
    path.write_text(params, encoding="utf-8")
    with pytest.raises(ParamsError) as info:
        settings.load({"LLM4CTR_PARAMS": str(path), **env})
    assert message in str(info.value)
    with pytest.raises(ParamsError, match="serving settings file not found; run from the project root"):
        settings.load({"LLM4CTR_PARAMS": str(tmp_path / "none.yaml")})


def test_service_metrics_mirror_the_prediction_log(tmp_path: Path):
    from prometheus_client import CollectorRegistry

    from serving.metrics import ServiceMetrics

    registry = CollectorRegistry()
    log = PredictionLog(tmp_path / "log", max_pending=1, flush_seconds=0.05)
    metrics = ServiceMetrics(log, "m:1", registry=registry, interval=0.05)
    accepted = [log.append([{"a": i}, {"a": -i}], [0.5, 0.5], "m:1") for i in range(200)]
    metrics.predictions.inc(400)
    log.close()
    metrics.close()

    def value(name: str) -> float:
        return registry.get_sample_value(name, {"model_version": "m:1"})

    assert value("llm4ctr_predictions_total") == 400
    assert value("llm4ctr_prediction_log_written_total") == log.stats["written"] == 2 * sum(accepted)
    assert value("llm4ctr_prediction_log_dropped_total") == log.stats["dropped"] == 2 * accepted.count(False) > 0
    assert value("llm4ctr_prediction_log_errors_total") == 0


def test_no_module_uses_bentoml_internals():
    """BentoML's public API only: `bentoml._internal` (and `_bentoml_impl`) change without notice."""
    root = Path(__file__).resolve().parents[1]
    skip = {".venv", "artifacts", ".git", "bentoml_home", ".dagster_home", "__pycache__"}
    pattern = re.compile(r"^\s*(from|import)\s+(bentoml\._internal|_bentoml_impl)\b|import_module\(.bentoml\._", re.M)
    offenders, checked = [], 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".venv")]
        for name in files:
            if name.endswith(".py"):
                checked += 1
                if pattern.search((Path(folder) / name).read_text(encoding="utf-8", errors="replace")):
                    offenders.append(str((Path(folder) / name).relative_to(root)))
    assert checked > 50 and not offenders
