"""Load test of a running CTR service with Locust: records sampled from the test split, POSTed to /predict.

Locust is not a project dependency: install it in an environment of its own, with pyarrow to read
the split, and run it from the project root against a running service (``make serve``)::

    python3 -m venv /tmp/locust && /tmp/locust/bin/pip install locust pyarrow
    /tmp/locust/bin/locust -f serving/locustfile.py --host http://127.0.0.1:3000 \\
        --headless --users 16 --spawn-rate 16 --run-time 30s --records-per-request 1

Without ``--headless`` Locust serves its web UI (http://127.0.0.1:8089). Options of this file:
``--records-per-request`` (default 1), ``--split-file`` (default ``artifacts/split/<dataset>/test.parquet``,
``<dataset>`` as the service's /metadata reports it) and ``--sample-seed``. Each request carries
records drawn at random from the split, restricted to the fields the served model reads (/metadata's
``fields``), so the service validates, encodes and scores them as it would real traffic. A response
other than 200, or one without a probability in [0, 1] for every record, counts as a failure. Every
record scored also lands in the service's prediction log, which the drift stage reads.
"""

from __future__ import annotations

import json
import math
import random
from functools import cache
from pathlib import Path

import pyarrow.parquet as pq
from locust import HttpUser, events, task


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--records-per-request", type=int, default=1, help="records in each /predict request")
    parser.add_argument("--split-file", default="", help="default: artifacts/split/<dataset>/test.parquet")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the record sampling")


@cache
def split_records(path: str, fields: tuple[str, ...]) -> list[dict]:
    """The split's rows as JSON-ready records of ``fields`` (missing values as null)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no split file; run from the project root or pass --split-file")
    table = pq.read_table(path, columns=list(fields))
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in table.to_pylist()
    ]


class PredictUser(HttpUser):
    """Sends /predict requests back to back, each with ``--records-per-request`` sampled records."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        with self.client.post("/metadata", json={}, name="/metadata (start-up)", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"/metadata answered {response.status_code}")
                raise RuntimeError(f"{self.host}/metadata answered {response.status_code}: is the service running?")
            meta = response.json()
        path = options.split_file or f"artifacts/split/{meta['dataset']}/test.parquet"
        self.records = split_records(path, tuple(f["name"] for f in meta["fields"]))
        self.n = max(1, int(options.records_per_request))
        self.rng = random.Random(f"{options.sample_seed}-{id(self)}")

    @task
    def predict(self) -> None:
        body = json.dumps({"records": self.rng.choices(self.records, k=self.n)})
        headers = {"Content-Type": "application/json"}
        with self.client.post("/predict", data=body, headers=headers, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            scores = response.json()
            if len(scores) != self.n or not all(0.0 <= s["probability"] <= 1.0 for s in scores):
                response.failure(f"expected {self.n} probabilities, got {response.text[:200]}")
