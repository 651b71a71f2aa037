"""What every trainable method's stage shares: seeds, train configs, resumable work dirs, outputs.

Output layout per variant (docs/CONTRACTS.md): predictions.parquet (seed, split, row, prob),
summary.json, and one checkpoint folder per seed. The evaluate stage reads only the predictions, so
a new method joins the results tables by writing this layout.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.tables import write_json, write_table
from llm4ctr.params import Params
from llm4ctr.settings import RUNTIME_KEYS

PREDICTIONS = "predictions.parquet"
SUMMARY = "summary.json"


def seeds(params: Params, key: str = "train.seeds") -> list[int]:
    """The seeds a method trains with (mean and spread over them are reported)."""
    return [int(s) for s in params.get_path(key)]


def train_config(params: Params, seed: int, section: str = "train", **overrides):
    """A models.trainer.TrainConfig from params[section] (minus ``seeds``) for one seed."""
    from models.trainer import TrainConfig

    values = {k: v for k, v in params.get_path(section).items() if k != "seeds"}
    return TrainConfig.from_dict({**values, **overrides, "seed": seed})


def resume_key(params: Params, root: Path, stage_name: str, variant: str | None = None) -> str:
    """The one key of a stage's resumable work dirs: its declared params minus the runtime keys
    (llm4ctr.settings.RUNTIME_KEYS and every fan-out list: which runs happen, not what one run learns)
    plus the content of its declared inputs, so a changed upstream output never resumes stale work."""
    from assets.registry import STAGES, get_stage

    stage = get_stage(stage_name)
    fan_out = {s.fan_out for s in STAGES if s.fan_out}

    def strip(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {
                k: strip(v, f"{key}.{k}")
                for k, v in value.items()
                if k not in RUNTIME_KEYS and f"{key}.{k}" not in fan_out
            }
        return value

    values = {
        k: strip(params.get_path(k), k)
        for k in stage.params
        if k.rsplit(".", 1)[-1] not in RUNTIME_KEYS and k not in fan_out
    }
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode())
    for dep in stage.paths("deps", params.get_path("data.name"), variant, params):
        _hash_tree(digest, Path(root) / dep)
    return digest.hexdigest()[:12]


def _hash_tree(digest, path: Path) -> None:
    """Feed the relative names and contents of the files under ``path`` (in a stable order) into ``digest``;
    temporaries and lock files of writers are not content."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if any(part.startswith((".tmp-", ".lock-")) for part in file.relative_to(path.parent).parts):
            continue
        digest.update(file.relative_to(path.parent).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)


def work_dir(root: Path, stage: str, dataset: str, variant: str, seed: int, key: str) -> Path:
    """A stable checkpoint folder for resuming a killed run; ``key`` (:func:`resume_key`) ties it to
    what the run depends on."""
    path = Path(root) / "artifacts" / ".work" / stage / dataset / variant / f"seed{seed}-{key}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def predictions_frame(records: list[tuple]) -> pd.DataFrame:
    """(seed, split, probabilities in split-file order) records -> the predictions table; a record
    (seed, split, probabilities, rows) covers only those rows of the split (a sample of test users)."""
    frames = [
        pd.DataFrame(
            {
                "seed": np.int64(seed),
                "split": split,
                "row": np.arange(len(p), dtype=np.int64) if not rows else np.asarray(rows[0], dtype=np.int64),
                "prob": np.asarray(p, dtype=np.float64),
            }
        )
        for seed, split, p, *rows in records
    ]
    return pd.concat(frames, ignore_index=True)


def write_variant(out_dir: Path, records: list[tuple[int, str, np.ndarray]], summary: dict[str, Any]) -> None:
    """Write predictions.parquet and summary.json of one variant into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(predictions_frame(records), out_dir / PREDICTIONS)
    write_json(summary, out_dir / SUMMARY)


def fit_summary(result, n_train: int, seconds: float) -> dict[str, Any]:
    """The per-seed figures of a models.trainer FitResult worth keeping.

    ``train_seconds`` sums the training time of every epoch in the history, which the trainer carries
    across resumes: a seed resumed after it had finished keeps the time it took to train, not the
    moment it took to reload. ``fit_seconds`` is the wall time of this call (epochs, validation, reload).
    """
    epoch_seconds = sum(h.get("seconds", 0.0) for h in result.history) or seconds
    return {
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "valid_auc": round(float(result.best_auc), 6),
        "train_seconds": round(epoch_seconds, 2),
        "fit_seconds": round(seconds, 2),
        "train_samples_per_s": round(n_train * len(result.history) / epoch_seconds, 1),
    }


def fit_seed(model, config, train: dict, valid: dict, scored: dict[str, dict], work: Path, out: Path, curves=None):
    """One seed of a method: train ``model`` with models.trainer.Trainer (early stopping on ``valid``,
    resuming from ``work``), save its best checkpoint to ``out`` and predict every split of ``scored``;
    the per-epoch history goes to ``curves`` (an assets.curves.Curves) when given.

    Returns (trainer, the fit summary of :func:`fit_summary`, [(split, probabilities), ...]).
    """
    import time

    from models.trainer import Trainer, save_model

    trainer = Trainer(model, config)
    started = time.perf_counter()
    result = trainer.fit(train, valid, work)
    summary = fit_summary(result, len(train["label"]), time.perf_counter() - started)
    if curves is not None:
        curves.add(config.seed, result.history)
    predictions = [(split, trainer.predict(arrays)) for split, arrays in scored.items()]
    save_model(trainer.model, out)
    return trainer, summary, predictions


def scored(arrays: dict[str, dict]) -> dict[str, dict]:
    """The splits whose predictions a variant writes (and the evaluate stage reads): valid and test."""
    return {split: arrays[split] for split in ("valid", "test")}
