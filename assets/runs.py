"""What every trainable method's stage shares: seeds, train configs, resumable work dirs, outputs.

Output layout per variant (docs/CONTRACTS.md): predictions.parquet (seed, split, row, prob),
summary.json, and one checkpoint folder per seed. The evaluate stage reads only the predictions, so
a new method joins the results tables by writing this layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.tables import write_json, write_table
from llm4ctr.params import Params

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


# Keys that choose which seeds run or how a run looks, not what one seed learns: left out of the
# digest that keys a seed's resumable work dir, so adding a seed (or turning the progress bar off)
# resumes the seeds already trained instead of training them again.
PER_RUN_KEYS = ("train.seeds", "train.progress", "train.num_threads", "llm4msr.seeds",
                "clickprompt.finetune.plm_seeds")


def seed_digest(params: Params, keys: list[str] | tuple[str, ...]) -> str:
    """The digest of ``keys`` without :data:`PER_RUN_KEYS` (a section naming one of them is taken key by key)."""
    flat = []
    for key in keys:
        dropped = [k for k in PER_RUN_KEYS if k.startswith(key + ".")]
        if dropped:
            flat += [f"{key}.{k}" for k in params.get_path(key) if f"{key}.{k}" not in dropped]
        else:
            flat.append(key)
    return params.digest(flat)


def work_dir(root: Path, stage: str, dataset: str, variant: str, seed: int, digest: str) -> Path:
    """A stable checkpoint folder for resuming a killed run; ``digest`` keys it to the params used."""
    path = Path(root) / "artifacts" / ".work" / stage / dataset / variant / f"seed{seed}-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def predictions_frame(records: list[tuple[int, str, np.ndarray]]) -> pd.DataFrame:
    """(seed, split, probabilities in split-file order) records -> the predictions table."""
    frames = [
        pd.DataFrame({"seed": np.int64(seed), "split": split, "row": np.arange(len(p), dtype=np.int64),
                      "prob": np.asarray(p, dtype=np.float64)})
        for seed, split, p in records
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


def fit_seed(model, config, train: dict, valid: dict, scored: dict[str, dict], work: Path, out: Path):
    """One seed of a method: train ``model`` with models.trainer.Trainer (early stopping on ``valid``,
    resuming from ``work``), save its best checkpoint to ``out`` and predict every split of ``scored``.

    Returns (trainer, the fit summary of :func:`fit_summary`, [(split, probabilities), ...]).
    """
    import time

    from models.trainer import Trainer, save_model

    trainer = Trainer(model, config)
    started = time.perf_counter()
    result = trainer.fit(train, valid, work)
    summary = fit_summary(result, len(train["label"]), time.perf_counter() - started)
    predictions = [(split, trainer.predict(arrays)) for split, arrays in scored.items()]
    save_model(trainer.model, out)
    return trainer, summary, predictions


def scored(arrays: dict[str, dict]) -> dict[str, dict]:
    """The splits whose predictions a variant writes (and the evaluate stage reads): valid and test."""
    return {split: arrays[split] for split in ("valid", "test")}
