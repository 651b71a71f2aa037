"""A tiny project for the serving and drift tests: split files (and their summary.json), a fitted
encoder and a trained zoo checkpoint laid out exactly as the split, features and train stages write
them (docs/CONTRACTS.md).

The table is tests/fixtures_tables' learnable synthetic MovieLens-like frame with the ML-100K scenario
rule (age groups), so the model's probabilities depend on the features and an age-mix shift is visible
in ``age``, ``scenario`` and the predictions.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

from assets.runs import write_variant
from assets.split import cold_shares
from assets.tables import describe, write_json, write_table
from llm4ctr.params import Params, load_params
from models.ctr import build_model
from models.features import FeatureEncoder, default_spec
from models.trainer import TrainConfig, Trainer, save_model
from tests.fixtures_ctr import TINY
from tests.fixtures_tables import make_interactions, split

ROOT = Path(__file__).resolve().parents[1]
DATASET = "ml-100k"
MODEL = "dcnv2"
SEED = 7
DATA_MD5 = "0123456789abcdef0123456789abcdef.dir"


@contextmanager
def bentoml_home(path: Path) -> Iterator[None]:
    """``BENTOML_HOME=path`` while inside (the bento stage registers into the test's own store)."""
    previous = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("BENTOML_HOME", None)
        else:
            os.environ["BENTOML_HOME"] = previous


def table(n_rows: int = 6000, seed: int = 0) -> pd.DataFrame:
    return make_interactions(n_rows=n_rows, n_users=200, n_items=150, seed=seed, scenarios="age")


def build_project(root: Path, n_rows: int = 6000, epochs: int = 3) -> Params:
    """Write split/, features/ and train/<MODEL>/ artifacts under ``root``; return params for it."""
    train_df, valid_df, test_df = split(table(n_rows))
    splits = {"train": train_df, "valid": valid_df, "test": test_df}
    split_dir = root / "artifacts" / "split" / DATASET
    split_dir.mkdir(parents=True)
    for name, frame in splits.items():
        write_table(frame, split_dir / f"{name}.parquet")
    cold = cold_shares(splits)
    summary = {name: {**describe(frame), **cold[name]} for name, frame in splits.items()}
    write_json({"dataset": DATASET, "method": "random", "splits": summary}, split_dir / "summary.json")
    encoder = FeatureEncoder.fit(train_df, default_spec(train_df.columns))
    encoder.save(root / "artifacts" / "features" / DATASET)
    arrays = {name: encoder.transform(frame) for name, frame in splits.items()}

    torch.manual_seed(SEED)
    model = build_model(MODEL, encoder.vocab_sizes, **TINY[MODEL])
    trainer = Trainer(model, TrainConfig(max_epochs=epochs, batch_size=256, seed=SEED, progress=False, num_threads=1))
    started = time.perf_counter()
    result = trainer.fit(arrays["train"], arrays["valid"], root / "work")
    variant_dir = root / "artifacts" / "train" / DATASET / MODEL
    save_model(trainer.model, variant_dir / f"seed{SEED}")
    records = [(SEED, name, trainer.predict(arrays[name])) for name in ("valid", "test")]
    summary = {
        "variant": MODEL,
        "stage": "train",
        "params_digest": "feedc0ffee12",
        "seeds": {
            str(SEED): {
                "best_epoch": result.best_epoch,
                "valid_auc": result.best_auc,
                "train_seconds": time.perf_counter() - started,
            }
        },
    }
    write_variant(variant_dir, records, summary)
    shutil.rmtree(root / "work")
    (root / "data.dvc").write_text(f"outs:\n- md5: {DATA_MD5}\n  path: data\n", encoding="utf-8")
    return load_params(ROOT / "params.yaml", {"data.name": DATASET, "serve.log_dir": "predictions_log"})
