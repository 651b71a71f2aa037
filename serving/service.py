"""The BentoML service of the CTR-only path: raw feature records in, click probabilities out.

Serve it (model registered first by the ``bento`` stage, ``llm4ctr stage bento``)::

    make serve                                          # 127.0.0.1:$PORT (default 3000)
    BENTOML_HOME=$PWD/bentoml_home bentoml serve serving.service:CTRService --host 127.0.0.1 --port 3000

Endpoints: ``POST /predict`` ``{"records": [{...}, ...]}`` -> ``[{"probability", "model_version"}, ...]``
(adaptive batching merges concurrent requests into one model call); ``POST /metadata`` (model
version, dataset, variant, metrics, lineage, fields, prediction-log counters); ``GET /livez``,
``/readyz``, ``/healthz``, ``/metrics``; OpenAPI docs at ``/`` and ``/docs.json``.

Which model: ``$LLM4CTR_MODEL_TAG`` (default ``llm4ctr-ctr:latest``). Its metadata, written by the
bento stage, shapes this module at import time: the record schema (the encoder's fields), the
request limits and batching settings (params.yaml ``serve:``). Everything heavy (bentoml, torch,
the model) is loaded once at start-up; a request only validates, encodes, runs the model and queues
a log entry. The prediction log goes to ``$LLM4CTR_PREDICTION_LOG/<dataset>/`` (default
``<serve.log_dir>/<dataset>/`` under the working directory).
"""

import os
from pathlib import Path
from typing import Any

import bentoml
import torch

from assets.prediction_log import PredictionLog
from llm4ctr.env import apply_defaults
from llm4ctr.errors import DataError
from models.predictor import Predictor
from serving.guard import RequestGuard
from serving.schemas import Prediction, record_model, records_type

apply_defaults()

MODEL_TAG = os.environ.get("LLM4CTR_MODEL_TAG", "llm4ctr-ctr:latest")
_model_ref = bentoml.models.BentoModel(MODEL_TAG)
if _model_ref.stored is None:
    raise DataError(
        f"BentoML model '{MODEL_TAG}' is not in the model store under "
        f"{os.environ.get('BENTOML_HOME', '~/bentoml')}; register it with `llm4ctr stage bento`"
    )
META: dict[str, Any] = _model_ref.stored.info.metadata
SERVE: dict[str, Any] = META["serve"]

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
        log_root = os.environ.get("LLM4CTR_PREDICTION_LOG") or SERVE["log_dir"]
        self.log = PredictionLog(Path(log_root) / META["dataset"], max_pending=int(SERVE["log_max_pending"]))
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
        return [{"probability": p, "model_version": self.version} for p in probs]

    @bentoml.api(route="/metadata")
    def metadata(self) -> dict[str, Any]:
        """The served model: version, dataset, variant, metrics, lineage, record fields, log counters."""
        return {
            "model_version": self.version,
            **{k: v for k, v in META.items() if k != "serve"},
            "limits": {k: SERVE[k] for k in ("max_records", "max_body_bytes")},
            "prediction_log": {"directory": str(self.log.directory), **self.log.stats},
        }

    @bentoml.on_shutdown
    def _close_log(self) -> None:
        self.log.close()


CTRService.add_asgi_middleware(RequestGuard, max_body_bytes=int(SERVE["max_body_bytes"]))
# BentoML 1.4.39 derives a list output's media type from its JSON schema, regenerated on every
# response (about 20% of a single-record request's CPU); stating it once skips that.
for _api in CTRService.apis.values():
    _api.output_spec.media_type = "application/json"
