"""Prometheus counters of what the service scored and what its prediction log kept, on GET /metrics.

* ``llm4ctr_predictions_total``: records scored;
* ``llm4ctr_prediction_log_written_total``, ``..._dropped_total``, ``..._errors_total``: the prediction
  log's counts (:attr:`assets.prediction_log.PredictionLog.stats`): entries written, entries dropped
  (queue full or a failed write), write errors.

All carry the label ``model_version`` (the BentoML tag). They live in prometheus_client's default
registry, which BentoML's workers run in multiprocess mode: /metrics sums them over the workers
(BentoML 1.4 deprecates its ``bentoml.metrics`` alias and asks for prometheus_client itself,
imported in the worker, as here: :class:`ServiceMetrics` is built in the service's ``__init__``).

Request path cost: one counter increment per merged batch. The log counts change in the log's
writer thread, so a daemon thread copies their increase into the counters every ``interval`` seconds
instead of the request path polling them.
"""

from __future__ import annotations

import threading
from typing import Any

PREFIX = "llm4ctr_"
LOG_COUNTS = ("written", "dropped", "errors")


class ServiceMetrics:
    """The service's counters, and the thread that mirrors the prediction log's counts into them."""

    def __init__(self, log: Any, model_version: str, registry: Any = None, interval: float = 1.0):
        from prometheus_client import REGISTRY, Counter

        registry = REGISTRY if registry is None else registry
        labels = {"model_version": model_version}
        self.predictions = Counter(
            PREFIX + "predictions", "Records scored by /predict", ["model_version"], registry=registry
        ).labels(**labels)
        self.log_counters = {
            key: Counter(
                f"{PREFIX}prediction_log_{key}",
                f"Prediction log entries {key}" if key != "errors" else "Prediction log write errors",
                ["model_version"],
                registry=registry,
            ).labels(**labels)
            for key in LOG_COUNTS
        }
        self.log = log
        self.synced = dict.fromkeys(LOG_COUNTS, 0)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-metrics", daemon=True)
        self._thread.start()

    def sync(self) -> None:
        """Add the prediction log's counts since the last sync to the counters."""
        stats = self.log.stats
        for key in LOG_COUNTS:
            increase = stats[key] - self.synced[key]
            if increase > 0:
                self.log_counters[key].inc(increase)
                self.synced[key] += increase

    def close(self) -> None:
        """Stop the sync thread after a last sync."""
        self._stop.set()
        self._thread.join(self.interval + 1)
        self.sync()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sync()
