"""The BentoML service of the CTR-only path: raw feature records in, click probabilities out.

Serve it (model registered first by the ``bento`` stage, ``llm4ctr stage bento``)::

    make serve                                          # 127.0.0.1:$PORT (default 3000)
    BENTOML_HOME=$PWD/bentoml_home bentoml serve serving.service:CTRService --host 127.0.0.1 --port 3000

Endpoints: ``POST /predict`` ``{"records": [{...}, ...]}`` -> ``[{"probability", "model_version"}, ...]``
(adaptive batching merges concurrent requests into one model call); ``POST /metadata`` (model
version, dataset, variant, metrics, lineage, fields, the model card, the serving settings in force,
prediction-log counters); ``GET /livez``, ``/readyz``, ``/healthz``, ``/metrics`` (BentoML's request
metrics and the counters of serving/metrics.py); OpenAPI docs at ``/`` and ``/docs.json``.

Which model: ``$LLM4CTR_MODEL_TAG`` (default ``llm4ctr-ctr:latest``); its metadata, written by the
bento stage, gives the record schema (the encoder's fields). How it is served (workers, batching,
limits, log, metrics) is read at start-up from params.yaml ``serve:`` with ``LLM4CTR_SERVE_*``
overrides (serving/settings.py). Everything heavy (bentoml, torch, the model) is loaded once at
start-up; a request only validates, encodes, runs the model, counts and queues a log entry. The
prediction log goes to ``<log_dir>/<dataset>/`` (``serve.log_dir``, ``$LLM4CTR_SERVE_LOG_DIR``).
"""

import os
from pathlib import Path
from typing import Any

import bentoml
import torch

from assets.bento_store import MODEL_CARD
from assets.prediction_log import PredictionLog
from llm4ctr.env import apply_defaults
from llm4ctr.errors import DataError
from models.predictor import Predictor
from serving import settings
from serving.guard import RequestGuard
from serving.metrics import ServiceMetrics
from serving.schemas import Prediction, record_model, records_type

apply_defaults()

MODEL_TAG = os.environ.get("LLM4CTR_MODEL_TAG", "llm4ctr-ctr:latest")
_model_ref = bentoml.models.BentoModel(MODEL_TAG)
if _model_ref.stored is None:
    raise DataError(
        f"BentoML model '{MODEL_TAG}' is not in the model store under "
        f"{os.environ.get('BENTOML_HOME', '~/bentoml')}; register it with `llm4ctr stage bento` "
        "(or, for the bento stage's outputs already in artifacts/bento/, `python -m assets.bento_store`)"
    )
META: dict[str, Any] = _model_ref.stored.info.metadata
SERVE: dict[str, Any] = settings.load()

Record = record_model(META["fields"])
Records = records_type(Record, int(SERVE["max_records"]))


@bentoml.service(
    name="llm4ctr_ctr",
    workers=int(SERVE["workers"]),
    traffic={"timeout": float(SERVE["timeout_s"])},
    resources={"cpu": str(SERVE["workers"])},
    logging={"access": {"enabled": bool(SERVE["access_log"])}},
    metrics={"enabled": bool(SERVE["metrics"])},
    # no tracing exporter is configured: skip span bookkeeping unless asked for (about 15% of a request's CPU)
    tracing={} if SERVE["tracing"] else {"excluded_urls": ["/"]},
)
class CTRService:
    """Click probabilities for raw feature records from the registered CTR-only checkpoint."""

    model_ref = _model_ref

    def __init__(self) -> None:
        torch.set_num_threads(int(SERVE["torch_threads"]))
        stored = self.model_ref
        self.version = str(stored.tag)
        self.predictor = Predictor.load(stored.path)
        card = Path(stored.path) / MODEL_CARD  # absent from models registered before the bento stage wrote cards
        self.model_card = card.read_text(encoding="utf-8") if card.is_file() else None
        self.log = PredictionLog(Path(SERVE["log_dir"]) / META["dataset"], max_pending=int(SERVE["log_max_pending"]))
        self.metrics = ServiceMetrics(self.log, self.version) if SERVE["metrics"] else None
        # BentoML 1.4.39 looks the endpoint up on the instance for every request, and its descriptor
        # rebuilds a wrapper with inspect.signature each time (about 10% of a request's CPU at
        # concurrency 32); binding the endpoints once here lets those lookups find them directly.
        for name, api in CTRService.apis.items():
            self.__dict__[name] = api.__get__(self, type(self))
        # readiness: the model scores a record made only of unknown values (all OOV) to a probability
        canary = self.predictor.predict_records([{}])
        self.ready = canary.shape == (1,) and 0.0 <= float(canary[0]) <= 1.0

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.api(
        batchable=True, max_batch_size=int(SERVE["max_batch_size"]), max_latency_ms=int(SERVE["max_latency_ms"])
    )
    async def predict(self, records: Records) -> list[Prediction]:
        """Click probability of each record (same order), with the version of the model that scored it.

        A record carries ``user_id``, ``item_id`` and the dataset's user/item fields as in the
        training table; extra keys are ignored; unknown ids and values score through the OOV bucket.
        """
        # async on purpose: a merged batch scores in well under a millisecond per record, so it runs
        # on the event loop; a sync API would hop to a worker thread per batch, which on a busy
        # 2-core machine costs more (scheduling delay) than the model itself.
        probs = self.predictor.predict_records(records).tolist()
        self.log.append(records, probs, self.version)
        if self.metrics is not None:
            self.metrics.predictions.inc(len(probs))
        return [{"probability": p, "model_version": self.version} for p in probs]

    @bentoml.api(route="/metadata")
    def metadata(self) -> dict[str, Any]:
        """The served model (version, dataset, variant, metrics, lineage, record fields, model card),
        the serving settings in force and the prediction log's counters."""
        return {
            "model_version": self.version,
            **META,
            "model_card": self.model_card,
            "serve": SERVE,
            "prediction_log": {"directory": str(self.log.directory), **self.log.stats},
        }

    @bentoml.on_shutdown
    def _close_log(self) -> None:
        self.log.close()
        if self.metrics is not None:
            self.metrics.close()


CTRService.add_asgi_middleware(RequestGuard, max_body_bytes=int(SERVE["max_body_bytes"]))
# BentoML 1.4.39 derives a list output's media type from its JSON schema, regenerated on every
# response (about 20% of a single-record request's CPU); stating it once skips that.
for _api in CTRService.apis.values():
    _api.output_spec.media_type = "application/json"
