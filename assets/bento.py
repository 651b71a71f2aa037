"""Stage `bento`: register the chosen CTR-only checkpoint and its fitted encoder in the BentoML model store.

Which checkpoint: ``artifacts/<serve.stage>/<dataset>/<serve.variant>/seed<k>/`` (the zoo format of
docs/CONTRACTS.md: model.json + model.safetensors), ``k`` = ``serve.seed`` or, when null, the seed
with the best validation AUC in the variant's summary.json. The encoder is the features stage's
``encoder.json``. The ClickPrompt w/o-PLM checkpoint has the same format: serving it is
``serve.stage: clickprompt, serve.variant: clickprompt_wo_plm``.

Writes artifacts/bento/<dataset>/: ``model/`` (the three files the service loads, exactly what was
registered) and ``registration.json`` (tag, metrics, lineage). The BentoML model
``<serve.model_name>:<version>`` gets the same files; the version is a digest of them, so the same
checkpoint always gets the same version. Labels carry dataset, variant, seed and lineage (the params
digest the checkpoint was trained under, the data.dvc md5); metadata carries the metrics, the record
fields (which shape the service's request schema) and the serving settings (params ``serve``).
The store is ``$BENTOML_HOME/models`` (default: ``<root>/bentoml_home``, what ``make serve`` uses).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from assets.runs import PREDICTIONS, SUMMARY
from assets.tables import read_json, read_table, write_json
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir, portable

STAGE = "bento"
MODEL_DIR = "model"
REGISTRATION = "registration.json"
FILES = ("model.json", "model.safetensors", "encoder.json")
DEFAULT_HOME = "bentoml_home"
# serving settings copied into the model's metadata (the service reads them at import time)
SERVE_KEYS = (
    "max_records",
    "max_body_bytes",
    "max_batch_size",
    "max_latency_ms",
    "timeout_s",
    "workers",
    "torch_threads",
    "log_dir",
    "log_max_pending",
    "access_log",
    "metrics",
    "tracing",
)


def bentoml_home(root: Path) -> Path:
    """$BENTOML_HOME, else ``<root>/bentoml_home``."""
    return Path(os.environ.get("BENTOML_HOME") or Path(root) / DEFAULT_HOME)


def chosen_checkpoint(params: Params, root: Path) -> tuple[Path, int, dict[str, Any]]:
    """(checkpoint folder, seed, the variant's summary.json) for the ``serve`` choice."""
    dataset = params.get_path("data.name")
    stage, variant = params.get_path("serve.stage"), params.get_path("serve.variant")
    folder = artifact_dir(root, stage, dataset) / variant
    summary = read_json(folder / SUMMARY)
    seeds = {int(k): v for k, v in summary.get("seeds", {}).items()}
    if not seeds:
        raise DataError(f"{folder / SUMMARY}: lists no trained seeds")
    seed = params.get_path("serve.seed", None)
    if seed is None:
        seed = max(seeds, key=lambda s: seeds[s]["valid_auc"])
    elif int(seed) not in seeds:
        raise ParamsError(f"serve.seed: {seed} was not trained for {stage}/{variant}; trained seeds: {sorted(seeds)}")
    checkpoint = folder / f"seed{int(seed)}"
    missing = [name for name in FILES[:2] if not (checkpoint / name).is_file()]
    if missing:
        raise DataError(f"{checkpoint}: checkpoint lacks {missing}; re-run the {stage} stage")
    return checkpoint, int(seed), summary


def test_metrics(root: Path, dataset: str, variant_dir: Path, seed: int) -> dict[str, float]:
    """Test AUC and LogLoss of ``seed``'s predictions (written by the training stage)."""
    from models.metrics import auc, logloss

    preds = read_table(variant_dir / PREDICTIONS)
    test = preds[(preds["seed"] == seed) & (preds["split"] == "test")].sort_values("row")
    labels = read_table(artifact_dir(root, "split", dataset) / "test.parquet")["label"].to_numpy()
    if len(test) != len(labels):
        raise DataError(
            f"{variant_dir / PREDICTIONS}: {len(test)} test predictions for seed {seed}, "
            f"but the test split has {len(labels)} rows"
        )
    probs = test["prob"].to_numpy(dtype=np.float64)
    return {"test_auc": round(auc(labels, probs), 6), "test_logloss": round(logloss(labels, probs), 6)}


def data_version(root: Path) -> str:
    """The md5 that data.dvc records for the raw data ('unknown' when the file is absent)."""
    path = Path(root) / "data.dvc"
    if not path.is_file():
        return "unknown"
    outs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))


def files_digest(folder: Path) -> str:
    """A version string from the bytes of the registered files."""
    sha = hashlib.sha256()
    for name in FILES:
        sha.update(name.encode())
        sha.update((folder / name).read_bytes())
    return sha.hexdigest()[:16]


def register(folder: Path, name: str, labels: dict[str, str], metadata: dict[str, Any], home: Path) -> str:
    """Copy ``folder``'s files into the BentoML store as ``name:<digest>``; returns the tag.

    An existing model with that tag is replaced, so the registered one is always ``name:latest``.
    """
    import bentoml
    from bentoml._internal.models import ModelStore

    store = ModelStore(str(home / "models"))
    tag = f"{name}:{files_digest(folder)}"
    try:
        store.delete(tag)
    except bentoml.exceptions.NotFound:
        pass
    with bentoml.models.create(tag, labels=labels, metadata=metadata, _model_store=store) as model:
        for file in FILES:
            shutil.copy2(folder / file, model.path_of(file))
    return tag


def run(params: Params, root: Path) -> dict[str, Any]:
    """Copy the chosen checkpoint + encoder into artifacts/bento/<ds>/model/ and register them."""
    from models.features import FeatureEncoder

    root = Path(root)
    dataset = params.get_path("data.name")
    serve = params.get_path("serve")
    checkpoint, seed, summary = chosen_checkpoint(params, root)
    encoder_dir = artifact_dir(root, "features", dataset)
    encoder = FeatureEncoder.load(encoder_dir)
    metrics = {
        "valid_auc": summary["seeds"][str(seed)]["valid_auc"],
        **test_metrics(root, dataset, checkpoint.parent, seed),
    }
    lineage = {
        "params_digest": str(summary.get("params_digest", params.digest())),
        "data_md5": data_version(root),
        "checkpoint": portable(checkpoint, root),
    }
    fields = [{"name": f.name, "kind": f.kind} for f in encoder.spec.fields]
    metadata = {
        "dataset": dataset,
        "stage": serve["stage"],
        "variant": serve["variant"],
        "seed": seed,
        "metrics": metrics,
        "lineage": lineage,
        "fields": fields,
        "serve": {key: serve[key] for key in SERVE_KEYS},
    }
    labels = {
        "dataset": dataset,
        "stage": str(serve["stage"]),
        "variant": str(serve["variant"]),
        "seed": str(seed),
        "params_digest": lineage["params_digest"],
        "data_md5": lineage["data_md5"],
    }
    with atomic_dir(artifact_dir(root, STAGE, dataset)) as tmp:
        model_dir = tmp / MODEL_DIR
        model_dir.mkdir()
        for name in FILES[:2]:
            shutil.copy2(checkpoint / name, model_dir / name)
        shutil.copy2(encoder_dir / FILES[2], model_dir / FILES[2])
        tag = register(model_dir, serve["model_name"], labels, metadata, bentoml_home(root))
        write_json({"tag": tag, "labels": labels, **metadata}, tmp / REGISTRATION)
    return {
        "tag": tag,
        "variant": serve["variant"],
        "seed": seed,
        **metrics,
        **lineage,
        "store": str(bentoml_home(root) / "models"),
    }


def registered_model_dir(root: Path, dataset: str) -> Path:
    """artifacts/bento/<ds>/model/: the files of the registered model (what the service scores with)."""
    folder = artifact_dir(root, STAGE, dataset) / MODEL_DIR
    if not (folder / FILES[0]).is_file():
        raise DataError(f"{folder}: no registered model; run the bento stage first (`llm4ctr stage bento`)")
    return folder
