"""Stage `features`: fit the feature encoder on the TRAINING split only and encode all three splits.

Writes artifacts/features/<dataset>/: encoder.json (vocabularies with an OOV bucket, bucket edges)
and {train,valid,test}.npz (one int64 array per field plus ``label``), so every model stage starts
from the same encoding and serving loads the very same encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from assets.split import SPLITS, load_splits
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import DataError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir

STAGE = "features"


def run(params: Params, root: Path) -> dict[str, Any]:
    """Fit on train, encode every split, report vocabulary sizes and OOV rates."""
    from models.features import FeatureEncoder, default_spec

    dataset = params.get_path("data.name")
    splits = load_splits(root, dataset)
    spec = default_spec(list(splits["train"].columns), n_bins=int(params.get_path("features.n_bins")))
    encoder = FeatureEncoder.fit(splits["train"], spec, min_count=int(params.get_path("features.min_count")))
    oov = {}
    with atomic_dir(artifact_dir(root, STAGE, dataset)) as tmp:
        encoder.save(tmp)
        for name in SPLITS:
            arrays = encoder.transform(splits[name])
            np.savez(tmp / f"{name}.npz", **arrays)
            if name != "train":
                oov[name] = {f: round(float((a == 1).mean()), 4) for f, a in arrays.items() if f != "label"}
    return {
        "dataset": dataset,
        "fields": list(encoder.vocab_sizes),
        "vocab_sizes": encoder.vocab_sizes,
        "oov_rate": oov,
    }


def load_encoded(root: Path, dataset: str):
    """The fitted encoder and the encoded arrays of each split: ``(encoder, {"train": {...}, ...})``."""
    from models.features import FeatureEncoder

    folder = artifact_dir(root, STAGE, dataset)
    if not (folder / "encoder.json").is_file():
        raise DataError(f"{folder}/encoder.json: not found; run the features stage first (e.g. `dvc repro`)")
    encoder = FeatureEncoder.load(folder)
    arrays = {}
    for name in SPLITS:
        with np.load(folder / f"{name}.npz") as npz:
            arrays[name] = {key: npz[key] for key in npz.files}
    return encoder, arrays
