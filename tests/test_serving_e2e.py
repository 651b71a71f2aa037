"""End to end: the bento stage registers a trained checkpoint with its model card (and `make serve`'s
step registers restored outputs once), a real `bentoml serve` on 127.0.0.1 scores records exactly like
the offline model, answers bad and hostile input with 4xx (never 5xx), keeps serving correctly
afterwards, logs what it served and counts it on /metrics, with settings read at start-up.

The server runs in its own process group (``start_new_session``) and is stopped by PID (the group
is killed) whatever happens in the tests.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assets.bento import run as register
from assets.bento_store import MODEL_CARD, REGISTRATION
from assets.prediction_log import read_log
from assets.tables import read_json
from models.features import FeatureEncoder
from models.metrics import auc
from models.trainer import TrainConfig, Trainer, load_model
from serving.launcher import bentoml_serve
from tests.fixtures_serving import DATA_MD5, DATASET, MODEL, ROOT, SEED, bentoml_home, build_project

MAX_BODY = 8 * 2**20


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def predict(port: int, records: list[dict]) -> tuple[int, object]:
    status, body = request(
        port, "POST", "/predict", json.dumps({"records": records}).encode(), {"Content-Type": "application/json"}
    )
    return status, json.loads(body)


def records_of(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A trained tiny project, its bento registration, and the env a server needs."""
    root = tmp_path_factory.mktemp("serving")
    env = {
        **os.environ,
        "BENTOML_HOME": str(root / "bentoml_home"),
        "BENTOML_DO_NOT_TRACK": "True",
        "LLM4CTR_SERVE_LOG_DIR": str(root / "predictions_log"),
        "LLM4CTR_SERVE_TIMEOUT_S": "45",  # a deploy-time override of params.yaml serve.timeout_s
        "PYTHONPATH": str(ROOT),
    }
    with bentoml_home(root / "bentoml_home"):
        params = build_project(root)
        metadata = register(params, root)
    test = pd.read_parquet(root / "artifacts" / "split" / DATASET / "test.parquet")
    return {"root": root, "env": env, "params": params, "metadata": metadata, "test": test}


@pytest.fixture(scope="module")
def offline(project):
    """The offline model's probabilities for the test rows: models.trainer on FeatureEncoder.transform."""
    root = project["root"]
    model = load_model(root / "artifacts" / "train" / DATASET / MODEL / f"seed{SEED}")
    encoder = FeatureEncoder.load(root / "artifacts" / "features" / DATASET)
    return Trainer(model, TrainConfig(progress=False, num_threads=1)).predict(encoder.transform(project["test"]))


@pytest.fixture(scope="module")
def server(project):
    with bentoml_serve(project["env"], project["root"] / "serve.log") as running:
        yield running.port


def stored_model(env: dict[str, str], tag: str) -> dict | None:
    """`bentoml models get TAG -o json` in the store of ``env``'s BENTOML_HOME (None: not there)."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "models", "get", tag, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def bento_store_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`python -m assets.bento_store ARGS` (what `make serve` runs first) in the project root."""
    return subprocess.run(
        [sys.executable, "-m", "assets.bento_store", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bento_stage_registers_checkpoint_with_metrics_lineage_and_model_card(project, offline):
    root, metadata, env = project["root"], project["metadata"], project["env"]
    name = metadata["tag"].split(":")[0]
    model = stored_model(env, f"{name}:latest")
    assert f"{model['name']}:{model['version']}" == metadata["tag"]
    labels, info = model["labels"], model["metadata"]
    assert labels == {
        "dataset": DATASET,
        "stage": "train",
        "variant": MODEL,
        "seed": str(SEED),
        "params_digest": "feedc0ffee12",
        "data_md5": DATA_MD5,
    }
    test_auc = auc(project["test"]["label"], offline)
    assert info["metrics"]["test_auc"] == pytest.approx(test_auc, abs=1e-6)
    assert info["metrics_over_seeds"]["seeds"] == [SEED]
    assert info["lineage"]["checkpoint"] == f"artifacts/train/{DATASET}/{MODEL}/seed{SEED}"
    assert [f["name"] for f in info["fields"]][:2] == ["user_id", "item_id"]
    assert "serve" not in info  # serving settings are read when the server starts, not frozen into the model
    registration = read_json(root / "artifacts" / "bento" / DATASET / REGISTRATION)
    assert registration["tag"] == metadata["tag"]

    # the model card: next to registration.json, returned by the stage for Dagster, naming the metrics
    card = (root / "artifacts" / "bento" / DATASET / MODEL_CARD).read_text(encoding="utf-8")
    assert metadata["model_card_md"] == card
    assert metadata["model_card_file_path"] == f"artifacts/bento/{DATASET}/{MODEL_CARD}"
    assert metadata["tag"] in card and f"{test_auc:.4f}" in card
    assert f"{info['metrics']['valid_auc']:.4f}" in card and f"{info['metrics']['test_logloss']:.4f}" in card
    assert "head user & head item" in card and "## Limits" in card

    # same checkpoint -> same version, still the latest
    with bentoml_home(root / "bentoml_home"):
        assert register(project["params"], root)["tag"] == metadata["tag"]
    latest = stored_model(env, f"{name}:latest")
    assert f"{latest['name']}:{latest['version']}" == metadata["tag"]


def test_bento_store_registers_restored_outputs_once(project, tmp_path: Path):
    """A bento stage restored by DVC's run-cache has outputs but nothing in the clone's store: the
    `make serve` step registers them, and leaves an existing registration alone."""
    env = {**project["env"], "BENTOML_HOME": str(tmp_path / "fresh_home")}
    bento_dir = str(project["root"] / "artifacts" / "bento" / DATASET)
    tag = project["metadata"]["tag"]
    assert stored_model(env, tag) is None
    first = bento_store_cli(env, "--if-missing", bento_dir)
    assert first.returncode == 0 and first.stdout.strip() == tag and "registered:" in first.stderr, first.stderr
    model = stored_model(env, tag)
    assert model["labels"]["variant"] == MODEL
    assert model["metadata"]["metrics"]["test_auc"] == project["metadata"]["test_auc"]
    created = model["creation_time"]
    again = bento_store_cli(env, "--if-missing", bento_dir)
    assert again.returncode == 0 and again.stdout.strip() == tag and "already registered" in again.stderr
    assert stored_model(env, tag)["creation_time"] == created
    missing = bento_store_cli(env, "--if-missing", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "registration.json: not found" in missing.stderr


def test_served_predictions_equal_offline_predictions(project, offline, server):
    test = project["test"]
    records = records_of(test)
    status, body = predict(server, records)
    assert status == 200 and len(body) == len(test)
    served = np.array([row["probability"] for row in body])
    np.testing.assert_allclose(served, offline, rtol=0, atol=1e-6)
    assert {row["model_version"] for row in body} == {project["metadata"]["tag"]}

    # one record per request, 16 at a time: adaptive batching must hand each caller its own score
    with ThreadPoolExecutor(16) as pool:
        singles = list(pool.map(lambda r: predict(server, [r]), records[:96]))
    assert all(status == 200 for status, _ in singles)
    np.testing.assert_allclose([b[0]["probability"] for _, b in singles], offline[:96], rtol=0, atol=1e-6)

    # unknown ids and values fall back to OOV and still score
    unknown = {**records[0], "user_id": "no-such-user", "item_id": -42, "zip": "ñ", "genres": "Nope|Drama", "age": 999}
    status, body = predict(server, [unknown])
    assert status == 200 and 0.0 < body[0]["probability"] < 1.0

    # the prediction log holds what was served
    deadline = time.monotonic() + 10
    log_dir = project["root"] / "predictions_log" / DATASET
    while time.monotonic() < deadline and len(read_log(log_dir)) < len(records) + 97:
        time.sleep(0.2)
    logged = read_log(log_dir)
    assert len(logged) == len(records) + 97
    first = logged.head(len(records))
    assert first["user_id"].tolist() == test["user_id"].tolist()
    np.testing.assert_allclose(first["prob"], served, rtol=0, atol=0)


def test_bad_requests_get_4xx_naming_the_field(project, server):
    good = records_of(project["test"].head(1))[0]
    cases = {
        "missing field": ([{k: v for k, v in good.items() if k != "gender"}], "gender"),
        "wrong type": ([{**good, "age": "old"}], "age"),
        "bool id": ([{**good, "user_id": True}], "user_id"),
        "empty list": ([], "records"),
        "oversized batch": ([good] * 4097, "records"),
        "not a record": ([good, 5], "records"),
    }
    for name, (records, field) in cases.items():
        status, body = predict(server, records)
        assert status == 400, (name, status, body)
        assert any(field in map(str, error["loc"]) for error in body["detail"]), (name, body)
    status, body = request(server, "POST", "/predict", b'{"records": [', {"Content-Type": "application/json"})
    assert status == 400 and b"json_invalid" in body
    status, body = request(
        server,
        "POST",
        "/predict",
        b"records=1",  # what `curl -d` sends without -H
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415 and b"application/json" in body
    status, body = request(server, "POST", "/predict", b"x" * (MAX_BODY + 1), {"Content-Type": "application/json"})
    assert status == 413


def test_health_metadata_and_openapi(project, server):
    assert request(server, "GET", "/livez")[0] == 200
    assert request(server, "GET", "/readyz")[0] == 200
    status, body = request(server, "POST", "/metadata", b"{}", {"Content-Type": "application/json"})
    info = json.loads(body)
    assert status == 200 and info["model_version"] == project["metadata"]["tag"]
    assert info["variant"] == MODEL and info["lineage"]["data_md5"] == DATA_MD5 and "test_auc" in info["metrics"]
    card = (project["root"] / "artifacts" / "bento" / DATASET / MODEL_CARD).read_text(encoding="utf-8")
    assert info["model_card"] == card  # read from the registered model in the store
    # serving settings: params.yaml `serve:` at start-up, LLM4CTR_SERVE_* on top
    assert info["serve"]["timeout_s"] == 45.0 and info["serve"]["workers"] == 1
    assert info["serve"]["log_dir"] == project["env"]["LLM4CTR_SERVE_LOG_DIR"]
    status, body = request(server, "GET", "/docs.json")
    spec = json.loads(body)
    assert status == 200 and "/predict" in spec["paths"] and "/metadata" in spec["paths"]
    assert "user_id" in json.dumps(spec["components"])


def metric(port: int, name: str, model_version: str) -> float:
    """The value of counter ``name`` for ``model_version`` on GET /metrics (0 before its first increment)."""
    status, body = request(port, "GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and f'model_version="{model_version}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_predictions_and_log_entries(project, server):
    tag = project["metadata"]["tag"]
    names = {key: f"llm4ctr_{key}_total" for key in ("predictions", "prediction_log_written", "prediction_log_dropped")}

    def counters() -> dict[str, float]:
        return {key: metric(server, name, tag) for key, name in names.items()}

    def log_stats() -> dict[str, int]:
        status, body = request(server, "POST", "/metadata", b"{}", {"Content-Type": "application/json"})
        stats = json.loads(body)["prediction_log"]
        return {"prediction_log_written": stats["written"], "prediction_log_dropped": stats["dropped"]}

    def settled(expected) -> dict[str, float]:
        """The counters once they show ``expected()`` (the log's counts reach them within a second or so)."""
        deadline = time.monotonic() + 15
        while (now := counters()) != (want := expected(now)) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert now == want
        return now

    before = settled(lambda now: {**now, **log_stats()})  # earlier tests' traffic, mirrored from the log
    assert before["predictions"] == before["prediction_log_written"] + before["prediction_log_dropped"] > 0
    records = records_of(project["test"].head(50))
    for part in (records[:1], records[1:10], records[10:]):
        assert predict(server, part)[0] == 200
    assert predict(server, [{"user_id": True}])[0] == 400  # rejected: not scored, not counted
    after = settled(
        lambda now: {
            **before,
            "predictions": before["predictions"] + 50,
            "prediction_log_written": before["prediction_log_written"] + 50,
        }
    )
    assert after["prediction_log_written"] == log_stats()["prediction_log_written"]
    assert "bentoml_service_request_total" in request(server, "GET", "/metrics")[1].decode()


def hostile_requests(good: dict, fields: dict[str, str], n: int, seed: int = 0):
    """``n`` malformed or hostile (body, headers, expect_ok) requests; expect_ok: valid but odd input.

    ``good`` is a valid record, ``fields`` the model's fields (name -> kind).
    """
    rng = random.Random(seed)
    names = list(fields)
    json_type = {"Content-Type": "application/json"}
    weird = ["", " ", "\u0000", "😀" * 50, "\u202e" + "gnp", "ñ" * 1000, "\\", '"', "\ud7ff", "null", "-1", "1e309"]
    wrong = [True, False, [], {}, [1, 2], {"a": 1}, 1.5, 1e308, "x" * 2000]  # 1.5 is wrong for non-numeric fields only

    def valid_odd() -> dict:
        record = dict(good)
        field = rng.choice(names)
        if fields[field] == "numeric":
            record[field] = rng.choice([None, -(2**40), 0, 10**15, -1, 3.25])
        else:
            record[field] = rng.choice([rng.choice(weird), -rng.randrange(1, 10**12), rng.randrange(10**18)])
        return record

    def wrong_value(field: str):
        value = rng.choice(wrong)
        return "1.5" if value == 1.5 and fields[field] == "numeric" else value

    for i in range(n):
        kind = i % 20
        if kind == 0:  # random bytes
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
            yield body, json_type, False
        elif kind == 1:  # truncated valid JSON
            text = json.dumps({"records": [good] * 3})
            yield text[: rng.randrange(1, len(text))].encode(), json_type, False
        elif kind == 2:  # wrong type in a random field
            field = rng.choice(names)
            yield json.dumps({"records": [{**good, field: wrong_value(field)}]}).encode(), json_type, False
        elif kind == 3:  # valid but odd values: unicode, negative / huge ids, extreme numbers
            yield (
                json.dumps(
                    {"records": [valid_odd() for _ in range(rng.randrange(1, 5))]}, ensure_ascii=rng.random() < 0.5
                ).encode(),
                json_type,
                True,
            )
        elif kind == 4:  # deep nesting
            depth = rng.choice([100, 1000, 100_000])
            yield ('{"records": ' + "[" * depth + "]" * depth + "}").encode(), json_type, False
        elif kind == 5:  # structure games
            yield (
                rng.choice(
                    [
                        b"[]",
                        b"null",
                        b"1",
                        b'"records"',
                        b'{"records": {}}',
                        b'{"records": null}',
                        b'{"records": [[]]}',
                        b'{"records": [null]}',
                        b'{"records": "x"}',
                        b"{}",
                        b"",
                        b'{"records": [{"user_id": "1"}]}',
                        b'{"RECORDS": []}',
                    ]
                ),
                json_type,
                False,
            )
        elif kind == 6:  # huge numbers and literals JSON does not allow
            value = rng.choice(["1" * 5000, "NaN", "Infinity", "-Infinity", "1e99999", "0x10", "01"])
            yield ('{"records": [' + json.dumps(good)[:-1] + ', "age": ' + value + "}]}").encode(), json_type, False
        elif kind == 7:  # long strings
            yield (
                json.dumps({"records": [{**good, "zip": "9" * rng.choice([1025, 100_000])}]}).encode(),
                json_type,
                False,
            )
        elif kind == 8:  # invalid UTF-8 and lone surrogates
            yield (
                rng.choice(
                    [
                        b'{"records": [{"user_id": "\xff\xfe"}]}',
                        b'{"records": [{"user_id": "\\udc00"}]}',
                        json.dumps({"records": [{**good, "gender": "\ud800"}]}).encode("utf-8", "surrogatepass"),
                    ]
                ),
                json_type,
                False,
            )
        elif kind == 9:  # other content types
            yield (
                json.dumps({"records": [good]}).encode(),
                {
                    "Content-Type": rng.choice(
                        [
                            "text/plain",
                            "multipart/form-data; boundary=zz",
                            "application/x-www-form-urlencoded",
                            "application/vnd.bentoml+pickle",
                            "application/octet-stream",
                            "image/png",
                        ]
                    )
                },
                False,
            )
        elif kind == 10:  # more records than allowed
            yield json.dumps({"records": [good] * rng.choice([4097, 5000])}).encode(), json_type, False
        elif kind == 11:  # many extra keys and duplicated keys
            extra = {f"k{j}": "v" * 10 for j in range(rng.randrange(1, 3000))}
            yield json.dumps({"records": [{**good, **extra}]}).encode(), json_type, True
        elif kind == 12:
            yield (
                ('{"records": [' + json.dumps(good)[:-1] + ', "user_id": 1, "user_id": [1]}]}').encode(),
                json_type,
                False,
            )
        elif kind == 13:  # missing fields
            drop = rng.sample(names, rng.randrange(1, len(names)))
            yield json.dumps({"records": [{k: v for k, v in good.items() if k not in drop}]}).encode(), json_type, False
        elif kind == 14:  # a body over the size limit (only a few: each is 8 MiB)
            yield (b" " * (MAX_BODY + 1) if i % 200 == 14 else b"{" * 10_000), json_type, False
        else:  # mixed valid and invalid records in one request
            records = [
                rng.choice([good, valid_odd(), {**good, "age": "x"}, 7, None]) for _ in range(rng.randrange(1, 8))
            ]
            ok = all(isinstance(r, dict) and r.get("age") != "x" for r in records)
            yield json.dumps({"records": records}).encode(), json_type, ok


def test_1000_hostile_requests_never_5xx_and_server_stays_correct(project, offline, server):
    good = records_of(project["test"].head(1))[0]
    fields = {
        f["name"]: f["kind"]
        for f in read_json(project["root"] / "artifacts" / "bento" / DATASET / REGISTRATION)["fields"]
    }
    statuses, unexpected = [], []
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    for body, headers, expect_ok in hostile_requests(good, fields, 1000):
        try:
            conn.request("POST", "/predict", body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (ConnectionError, http.client.HTTPException):  # a refused 8 MiB upload may reset the socket
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
            conn.request("POST", "/predict", body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        if response.getheader("connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
        statuses.append(response.status)
        if expect_ok and (response.status != 200 or not all(0 <= p["probability"] <= 1 for p in json.loads(payload))):
            unexpected.append((body[:200], response.status, payload[:300]))
        if not expect_ok and not 400 <= response.status < 500:
            unexpected.append((body[:200], response.status, payload[:300]))
    conn.close()
    assert len(statuses) == 1000
    assert not [s for s in statuses if s >= 500]
    assert not unexpected, unexpected[:5]
    assert statuses.count(200) >= 100 and {400, 413, 415} <= set(statuses)
    # still serving the right numbers
    status, body = predict(server, records_of(project["test"]))
    assert status == 200
    np.testing.assert_allclose([row["probability"] for row in body], offline, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_bentoml_build_makes_a_cpu_bento_that_serves_the_same_predictions(project, offline, tmp_path: Path):
    """`bentoml build` packs the service and the registered model; the bento serves from elsewhere."""
    env = {k: v for k, v in project["env"].items() if k != "PYTHONPATH"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    out = subprocess.run(
        [bentoml, "build", "-f", "serving/bentofile.yaml", "-o", "tag", "."],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento_dir = Path(env["BENTOML_HOME"]) / "bentos" / tag.replace(":", "/")
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.13.0+cpu" in requirements and "download.pytorch.org/whl/cpu" in requirements
    assert (bento_dir / "src" / "serving" / "service.py").is_file()
    with bentoml_serve(env, tmp_path / "bento.log", target=tag, cwd=tmp_path) as running:
        status, body = predict(running.port, records_of(project["test"]))
    assert status == 200
    np.testing.assert_allclose([row["probability"] for row in body], offline, rtol=0, atol=1e-6)
