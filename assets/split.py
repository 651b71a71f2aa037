"""Stage `split`: the interactions table -> train/valid/test (8:1:1 by default), validated by GX.

Methods (params ``split.method``):
- ``random``: a seeded permutation, the usual CTR-benchmark protocol (default);
- ``global_time``: rows sorted by (timestamp, user_id, item_id), cut at the ratios (the ClickPrompt
  preprocessing lineage for ML-1M). On ML-100K about 85% of valid/test rows then belong to users
  never seen in training, which starves user embeddings and user-level prompts;
- ``user_time``: each user's own history in time order, first 80% / next 10% / last 10%;
- ``cold_item`` / ``cold_user``: whole items (users) go to validation and test, so that train never
  sees them: the protocols where an ID embedding knows nothing and only content (what an LLM knows
  about a title, what a profile says) can help. Keys are taken in a seeded random order and a key
  joins validation (test) only while its rows fit the split's target, so the shares land within
  ``split.tolerance`` of the ratios.

Each split file is sorted in the canonical (timestamp, user_id, item_id) order, so the same params
give byte-identical files. The report records each split's size, share, positive rate and its
cold-user / cold-item share (rows whose user/item never occurs in train). Each validation, by the stage
(GX run name ``split``) or by its Dagster check (``split-check``), is also recorded in the dataset's GX
project artifacts/gx/<dataset>/ and its Data Docs site, one page per table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.ingest import TABLE as INGEST_TABLE
from assets.tables import describe, preview_table, read_table, write_json, write_table
from assets.validation import COLD_KEYS, SPLIT_METHODS
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir, failure_path, gx_dir

STAGE = "split"
CHECK = f"{STAGE}-check"  # the GX run name of the Dagster check's validations
SPLITS = ("train", "valid", "test")
METHODS = SPLIT_METHODS
ORDER = ["timestamp", "user_id", "item_id"]


def _check_ratios(ratios: Any) -> tuple[float, float, float]:
    if not (
        isinstance(ratios, (list, tuple)) and len(ratios) == 3 and all(isinstance(r, (int, float)) for r in ratios)
    ):
        raise ParamsError(f"split.ratios must be three numbers (train, valid, test), got {ratios!r}")
    if any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ParamsError(f"split.ratios must be positive and sum to 1, got {ratios!r}")
    return tuple(float(r) for r in ratios)


def assign(table: pd.DataFrame, method: str, ratios: tuple[float, float, float], seed: int) -> np.ndarray:
    """Return an array of 0/1/2 (train/valid/test) for each row of ``table`` (in canonical order)."""
    n = len(table)
    if method in COLD_KEYS:
        return _assign_cold(table[COLD_KEYS[method]], ratios, seed)
    if method == "user_time":
        rank = table.groupby("user_id", sort=False).cumcount().to_numpy()
        size = table.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
        frac = (rank + 0.5) / size  # mid-rank: each user's counts round to nearest, unbiased overall
        return np.where(frac < ratios[0], 0, np.where(frac < ratios[0] + ratios[1], 1, 2))
    n_train = int(round(ratios[0] * n))
    n_valid = int(round(ratios[1] * n))
    position = np.arange(n)
    if method == "random":
        position = np.empty(n, dtype=np.int64)
        position[np.random.default_rng(seed).permutation(n)] = np.arange(n)
    elif method != "global_time":
        raise ParamsError(f"split.method must be one of {', '.join(METHODS)}, got {method!r}")
    return np.where(position < n_train, 0, np.where(position < n_train + n_valid, 1, 2))


def _assign_cold(keys: pd.Series, ratios: tuple[float, float, float], seed: int) -> np.ndarray:
    """0/1/2 per row such that every key value lies in one split: a seeded order of the distinct values,
    each joining test, then validation, while its rows keep that split at or under its target."""
    counts = keys.value_counts(sort=False)
    order = counts.index.to_numpy()[np.random.default_rng(seed).permutation(len(counts))]
    targets = {2: ratios[2] * len(keys), 1: ratios[1] * len(keys)}
    part_of: dict[Any, int] = {}
    for part, target in targets.items():
        filled = 0
        for key in order:
            if key not in part_of and filled + counts[key] <= target:
                part_of[key] = part
                filled += counts[key]
    return keys.map(lambda k: part_of.get(k, 0)).to_numpy()


def split_table(table: pd.DataFrame, method: str, ratios, seed: int) -> dict[str, pd.DataFrame]:
    """Split ``table`` into the three frames, each in canonical order with a fresh index."""
    ratios = _check_ratios(ratios)
    table = table.sort_values(ORDER, kind="stable").reset_index(drop=True)
    part = assign(table, method, ratios, seed)
    return {name: table[part == i].reset_index(drop=True) for i, name in enumerate(SPLITS)}


def cold_shares(splits: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Share of each split's rows whose user (item) never occurs in the training split."""
    users = set(splits["train"]["user_id"])
    items = set(splits["train"]["item_id"])
    out = {}
    for name, df in splits.items():
        n = max(len(df), 1)
        out[name] = {
            "cold_user_share": round(float((~df["user_id"].isin(users)).sum()) / n, 4),
            "cold_item_share": round(float((~df["item_id"].isin(items)).sum()) / n, 4),
        }
    return out


def run(params: Params, root: Path) -> dict[str, Any]:
    """Split the ingested table, validate the three splits, write them with a report."""
    from assets.validation import enforce, validate_split

    dataset = params.get_path("data.name")
    method = params.get_path("split.method")
    ratios = params.get_path("split.ratios")
    tolerance = float(params.get_path("split.tolerance"))
    table = read_table(artifact_dir(root, "ingest", dataset) / INGEST_TABLE)
    splits = split_table(table, method, ratios, int(params.get_path("split.seed")))
    report = validate_split(
        splits, dataset, method, gx_dir(root, dataset), STAGE, ratios=tuple(ratios), tolerance=tolerance
    )
    cold = cold_shares(splits)
    summary = {
        "dataset": dataset,
        "method": method,
        "splits": {
            name: {**describe(df), "share": round(len(df) / max(len(table), 1), 4), **cold[name]}
            for name, df in splits.items()
        },
    }
    with atomic_dir(artifact_dir(root, STAGE, dataset)) as tmp:
        enforce(report, tmp / "gx_result.json" if report.success else failure_path(root, STAGE, dataset))
        for name, df in splits.items():
            write_table(df, tmp / f"{name}.parquet")
        write_json(summary, tmp / "summary.json")
    flat = {f"{name}_{k}": v for name, s in summary["splits"].items() for k, v in s.items() if k != "per_scenario"}
    return {
        "dataset": dataset,
        "method": method,
        **flat,
        **report.docs_metadata(root),
        "preview_table": preview_table(splits["train"]),
    }


def split_method(root: Path, dataset: str) -> str:
    """The method the split files of ``dataset`` were made with (their summary.json)."""
    return json.loads((artifact_dir(root, STAGE, dataset) / "summary.json").read_text(encoding="utf-8"))["method"]


def load_splits(root: Path, dataset: str, columns: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read the three split files of ``dataset`` (what every later stage starts from); only ``columns``
    when given (stages that need a few columns of a wide table save the memory)."""
    folder = artifact_dir(root, STAGE, dataset)
    return {name: read_table(folder / f"{name}.parquet", columns) for name in SPLITS}


def check(params: Params, root: Path):
    """Re-run the split suites on the written files (Dagster's blocking asset check), recorded in the Data Docs."""
    from assets.validation import validate_split

    dataset = params.get_path("data.name")
    return validate_split(
        load_splits(root, dataset),
        dataset,
        params.get_path("split.method"),
        gx_dir(root, dataset),
        CHECK,
        ratios=tuple(params.get_path("split.ratios")),
        tolerance=float(params.get_path("split.tolerance")),
    )
