"""Stages `learn_tower`, `learn_embed` and `learn`: LEARN's twin towers, their embeddings, the enhanced ranker.

`learn_tower` (one instance per ``learn.towers``) trains a twin tower per seed (``train.seeds``) on the
TRAINING split's user sequences (models/learn: windows of history -> next items, InfoNCE), selects
the epoch by validation NDCG@10, and scores retrieval on the test split. Towers:

    learn      LEARN: causal PCH tower over the frozen LLM's item content embeddings, shared item tower
    learn_v2   item tower variant 2: a separate tower reading each item alone
    learn_v3   item tower variant 3: the raw content embedding is the item embedding
    id         the same structure and training over learned item-ID embeddings (the baseline)

Retrieval queries are the held-out (valid / test) interactions; each query's user embedding reads the
user's last ``history_len`` TRAINING interactions strictly before the held-out one, and every item the
user has not interacted with in training is a candidate (all items of the catalogue, seen in
training or not). Writes artifacts/learn_tower/<ds>/<tower>/: seed<k>/ (tower checkpoint) and
retrieval.json; the mean test figures also go to artifacts/learn_tower/<ds>/retrieval-<tower>.json
(`dvc metrics show`).

`learn_embed` (per tower) exports, per seed, the item embedding of every catalogue item and the user
embedding of every row of every split (history strictly before the row, training interactions only,
so no row sees its own label or anything later): artifacts/learn_embed/<ds>/<tower>/seed<k>/
embeddings.safetensors (``items`` [n_items + 1, D], row 0 = padding; ``user_<split>`` [rows, D] in
split-file order) and items.parquet (item_id -> row).

`learn` (one instance per ``learn.ranker.variants``, named ``<zoo model>_<tower>``, e.g.
``dcnv2_learn``) trains the zoo model with LEARN features: an auxiliary CTR task reads
[user_emb, item_emb], and its middle vector plus both embeddings are the model's dense input
(models/learn/aux_ctr.py). Same features, ``train`` settings, seeds and zoo hyper-parameters as the
plain baseline of the `train` stage, so the evaluate stage compares like with like. Writes the
layout of docs/CONTRACTS.md under artifacts/learn/<ds>/<variant>/.

``learn.sequence``: ``all`` (every rated item is an interaction; default) or ``positive`` (only
label-1 rows make sequences and retrieval targets).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.curves import Curves
from assets.features import load_encoded
from assets.registry import get_stage
from assets.runs import fit_seed, resume_key, scored, seeds, train_config, work_dir, write_variant
from assets.split import SPLITS, load_splits
from assets.tables import read_table, write_json, write_table
from assets.train import model_hparams
from llm4ctr.atomic import atomic_dir, save_tensors
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir

TOWER_STAGE = "learn_tower"
EMBED_STAGE = "learn_embed"
STAGE = "learn"
TOWERS = {"learn": 1, "learn_v2": 2, "learn_v3": 3, "id": 0}  # tower -> its item-tower kind (0: ID baseline)
SEQUENCES = ("all", "positive")
EMBEDDINGS = "embeddings.safetensors"
K = 10


# ---------------------------------------------------------------------- inputs
@dataclass
class Catalogue:
    """Item and user indices shared by every tower: items 1..n (0 = padding), users 0..m-1."""

    items: list[str]
    users: list[str]

    def __post_init__(self):
        self.item_index = {item: i + 1 for i, item in enumerate(self.items)}
        self.user_rows = {user: i for i, user in enumerate(self.users)}

    @classmethod
    def of(cls, splits: dict[str, pd.DataFrame]) -> Catalogue:
        """Every item and user of any split (the LLM gives unseen items a content embedding too)."""
        frames = [splits[s] for s in SPLITS]
        return cls(
            sorted(set().union(*(f["item_id"].astype(str) for f in frames))),
            sorted(set().union(*(f["user_id"].astype(str) for f in frames))),
        )

    def item_indices(self, frame: pd.DataFrame) -> np.ndarray:
        return frame["item_id"].astype(str).map(self.item_index).to_numpy(dtype=np.int64)


def interactions(params: Params, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` that count as interactions under ``learn.sequence``."""
    kind = params.get_path("learn.sequence")
    if kind not in SEQUENCES:
        raise ParamsError(f"{params.source}: learn.sequence must be one of {', '.join(SEQUENCES)}, got {kind!r}")
    return frame[frame["label"] == 1] if kind == "positive" else frame


def training_sequences(params: Params, splits: dict[str, pd.DataFrame], catalogue: Catalogue):
    """User sequences from the TRAINING split only: nothing of valid/test ever enters a tower's input."""
    from models.learn.sequences import UserSequences

    train = interactions(params, splits["train"])
    return UserSequences.build(train["user_id"].astype(str), catalogue.item_indices(train), train["timestamp"])


def item_content(params: Params, root: Path, catalogue: Catalogue):
    """[n_items + 1, dim] content embeddings (row 0 zeros) from the `hidden_states_item` export.

    With ``learn.center_content`` the catalogue mean is subtracted and the rows L2-normalised again:
    mean-pooled decoder states share one dominant direction (SmolLM2-135M on ML-100K: mean cosine
    0.96 between items, 96% of the energy in the first singular direction), which leaves the towers
    only a small residual to work with. Unsupervised, from item texts only: no interaction is read.
    """
    import torch
    from safetensors import safe_open

    dataset = params.get_path("data.name")
    folder = artifact_dir(root, "hidden_states_item", dataset)
    index = read_table(folder / "index.parquet")
    path = folder / "states.safetensors"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the hidden_states_item stage first")
    with safe_open(str(path), framework="pt") as handle:
        states = handle.get_tensor("states").float()
    rows = pd.Series(np.arange(len(index)), index=index["item_id"].astype(str))
    missing = [item for item in catalogue.items if item not in rows.index]
    if missing:
        raise DataError(
            f"{folder}: no content embedding for {len(missing)} item(s) of the splits "
            f"(first: {missing[0]}); re-run the prompts and hidden_states_item stages"
        )
    content = torch.zeros(len(catalogue.items) + 1, states.shape[1])
    content[1:] = states[torch.as_tensor(rows[catalogue.items].to_numpy())]
    if params.get_path("learn.center_content"):
        content[1:] = torch.nn.functional.normalize(content[1:] - content[1:].mean(dim=0), dim=-1)
    return content


def tower_kind(params: Params, name: str) -> int:
    """The item-tower kind of tower ``name`` (models.learn.LearnTower's ``variant``; 0: the ID baseline)."""
    if name not in TOWERS:
        raise ParamsError(f"{params.source}: unknown LEARN tower '{name}'; choose from {', '.join(TOWERS)}")
    return TOWERS[name]


def tower_config(params: Params, seed: int):
    from models.learn.train_tower import TowerConfig

    return TowerConfig.from_dict({**dict(params.get_path("learn.tower_train")), "seed": seed})


def build_tower(params: Params, name: str, catalogue: Catalogue, content, max_len: int):
    """The twin tower ``name`` with the architecture of ``learn.tower``."""
    from models.learn import IDTwoTower, LearnTower

    arch = dict(params.get_path("learn.tower"))
    id_dim = arch.pop("id_embedding_dim")
    kind = tower_kind(params, name)
    try:
        if kind == 0:
            return IDTwoTower(len(catalogue.items), embedding_dim=id_dim, max_len=max_len, **arch)
        return LearnTower(content, variant=kind, max_len=max_len, **arch)
    except TypeError as exc:
        raise ParamsError(f"{params.source}: learn.tower: {exc}") from None


# ---------------------------------------------------------------------- stage learn_tower
def run_tower(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Train tower ``variant`` for every seed; retrieval on valid (selection) and test (report)."""
    import torch

    from models.distributed import Processes
    from models.learn.train_tower import Queries, fit_tower, query_ranks, save_tower, seen_matrix
    from models.metrics import longtail_mask

    dataset = params.get_path("data.name")
    kind = tower_kind(params, variant)
    splits = load_splits(root, dataset)
    catalogue = Catalogue.of(splits)
    seqs = training_sequences(params, splits, catalogue)
    seen = seen_matrix(seqs, catalogue.user_rows, len(catalogue.items))
    content = item_content(params, root, catalogue) if kind else None
    base = tower_config(params, 0)
    held = {s: interactions(params, splits[s]) for s in ("valid", "test")}
    queries = {
        s: Queries.build(
            seqs,
            f["user_id"].astype(str),
            catalogue.item_indices(f),
            f["timestamp"],
            catalogue.user_rows,
            base.history_len,
        )
        for s, f in held.items()
    }
    test_items = held["test"]["item_id"].astype(str).to_numpy()[queries["test"].rows]
    train_counts = splits["train"]["item_id"].astype(str).value_counts()
    segments = {
        "lt_item": longtail_mask(train_counts, test_items, float(params.get_path("evaluate.longtail_share"))),
        "cold_item": ~pd.Index(test_items).isin(train_counts.index),
    }
    key = resume_key(params, root, TOWER_STAGE, variant)
    per_seed = {}
    curves = Curves(root, TOWER_STAGE, dataset, variant)
    with atomic_dir(artifact_dir(root, TOWER_STAGE, dataset) / variant) as tmp:
        for seed in seeds(params):
            torch.manual_seed(seed)
            model = build_tower(params, variant, catalogue, content, max(base.history_len, base.target_len))
            started = time.perf_counter()
            result = fit_tower(
                model,
                seqs,
                queries["valid"],
                seen,
                tower_config(params, seed),
                work_dir(root, TOWER_STAGE, dataset, variant, seed, key),
            )
            curves.add(seed, result["history"])
            per_seed[seed] = _retrieval_figures(
                result, query_ranks(model, queries["test"], seen), segments, time.perf_counter() - started
            )
            save_tower(model, tmp / f"seed{seed}")
        mean = {
            key: round(float(np.mean([s["test"][key] for s in per_seed.values()])), 6)
            for key in per_seed[next(iter(per_seed))]["test"]
        }
        summary = {
            "tower": variant,
            "kind": kind,
            "sequence": params.get_path("learn.sequence"),
            "params_digest": params.digest(get_stage(TOWER_STAGE).params),
            "queries": {s: len(q.targets) for s, q in queries.items()},
            "dropped": {s: q.dropped for s, q in queries.items()},
            "test_mean": mean,
            "seeds": per_seed,
        }
        write_json(summary, tmp / "retrieval.json")
    if Processes.from_env().is_main:  # the metrics file lies outside the swapped folder: rank 0 alone writes it
        write_json({"tower": variant, **mean}, artifact_dir(root, TOWER_STAGE, dataset) / f"retrieval-{variant}.json")
    return {"tower": variant, **{f"test_{k}": v for k, v in mean.items()}}


def _retrieval_figures(result: dict, ranks: np.ndarray, segments: dict[str, np.ndarray], seconds: float) -> dict:
    from models.learn.retrieval import recall_ndcg

    test = {f"{key}": value for key, value in recall_ndcg(ranks, K).items() if key != "queries"}
    for name, mask in segments.items():
        figures = recall_ndcg(ranks[mask], K)
        test.update({f"{name}_{key}": value for key, value in figures.items()})
    return {
        "best_epoch": result["best_epoch"],
        "epochs": result["epoch"],
        "valid": {k: v for k, v in result["best"].items() if k not in ("queries", "dropped")},
        "test": {k: round(float(v), 6) for k, v in test.items()},
        "train_seconds": round(seconds, 2),
    }


# ---------------------------------------------------------------------- stage learn_embed
def run_embed(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Export tower ``variant``'s item embeddings and every split row's user embedding, per seed."""

    from models.learn.sequences import histories_before
    from models.learn.train_tower import embed_items, embed_users, load_tower

    dataset = params.get_path("data.name")
    tower_kind(params, variant)
    splits = load_splits(root, dataset)
    catalogue = Catalogue.of(splits)
    seqs = training_sequences(params, splits, catalogue)
    history_len = tower_config(params, 0).history_len
    histories = {
        s: histories_before(seqs, f["user_id"].astype(str), f["timestamp"], history_len) for s, f in splits.items()
    }
    towers = artifact_dir(root, TOWER_STAGE, dataset) / variant
    figures: dict[str, Any] = {
        "tower": variant,
        "empty_history_rows": {s: int((h == 0).all(1).sum()) for s, h in histories.items()},
    }
    with atomic_dir(artifact_dir(root, EMBED_STAGE, dataset) / variant) as tmp:
        write_table(
            pd.DataFrame({"item_id": catalogue.items, "row": np.arange(1, len(catalogue.items) + 1)}),
            tmp / "items.parquet",
        )
        for seed in seeds(params):
            model = load_tower(towers / f"seed{seed}")
            tensors = {"items": embed_items(model, len(catalogue.items))}
            tensors.update({f"user_{s}": embed_users(model, h) for s, h in histories.items()})
            (tmp / f"seed{seed}").mkdir()
            save_tensors({k: v.contiguous() for k, v in tensors.items()}, tmp / f"seed{seed}" / EMBEDDINGS)
            figures["dim"] = int(tensors["items"].shape[1])
        write_json(figures, tmp / "summary.json")
    return figures


def learn_features(
    root: Path, dataset: str, tower: str, seed: int, splits: dict[str, pd.DataFrame]
) -> dict[str, np.ndarray]:
    """Per split, the [rows, 2D] float32 [user_emb, item_emb] of every row (split-file order)."""
    from safetensors.numpy import load_file

    folder = artifact_dir(root, EMBED_STAGE, dataset) / tower
    path = folder / f"seed{seed}" / EMBEDDINGS
    if not path.is_file():
        raise DataError(f"{path}: not found; run `llm4ctr stage learn_embed --variant {tower}` (seed {seed})")
    tensors = load_file(str(path))
    items = read_table(folder / "items.parquet")
    index = pd.Series(items["row"].to_numpy(), index=items["item_id"].astype(str))
    out = {}
    for split, frame in splits.items():
        rows = index.reindex(frame["item_id"].astype(str)).to_numpy()
        if np.isnan(rows.astype(float)).any():
            raise DataError(f"{folder}/items.parquet: items of the {split} split are missing; re-run learn_embed")
        out[split] = np.concatenate([tensors[f"user_{split}"], tensors["items"][rows.astype(np.int64)]], axis=1)
    return out


# ---------------------------------------------------------------------- stage learn
def parse_ranker_variant(params: Params, variant: str) -> tuple[str, str]:
    """``<zoo model>_<tower>`` -> (zoo model, tower); e.g. dcnv2_learn_v3 -> (dcnv2, learn_v3)."""
    from models.ctr import MODELS

    backbone, _, tower = variant.partition("_")
    if backbone not in MODELS or tower not in TOWERS:
        raise ParamsError(
            f"{params.source}: learn.ranker.variants: '{variant}' must be <zoo model>_<tower> with a "
            f"model of {sorted(MODELS)} and a tower of {sorted(TOWERS)}"
        )
    return backbone, tower


def run_ranker(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Train the zoo model with LEARN features (``variant``) per seed; predict valid and test."""
    import torch

    from models.learn import LearnRanker

    dataset = params.get_path("data.name")
    backbone, tower = parse_ranker_variant(params, variant)
    encoder, arrays = load_encoded(root, dataset)
    splits = load_splits(root, dataset)
    ranker = dict(params.get_path("learn.ranker"))
    ranker.pop("variants", None)
    hparams = model_hparams(params, backbone)
    key = resume_key(params, root, STAGE, variant)
    records, per_seed = [], {}
    curves = Curves(root, STAGE, dataset, variant)
    with atomic_dir(artifact_dir(root, STAGE, dataset) / variant) as tmp:
        for seed in seeds(params):
            dense = learn_features(root, dataset, tower, seed, splits)
            data = {s: {**arrays[s], "dense": dense[s]} for s in SPLITS}
            torch.manual_seed(seed)
            try:
                model = LearnRanker(encoder.vocab_sizes, backbone, hparams, learn_dim=dense["train"].shape[1], **ranker)
            except TypeError as exc:
                raise ParamsError(f"{params.source}: learn.ranker: {exc}") from None
            _, per_seed[seed], predictions = fit_seed(
                model,
                train_config(params, seed),
                data["train"],
                data["valid"],
                scored(data),
                work_dir(root, STAGE, dataset, variant, seed, key),
                tmp / f"seed{seed}",
                curves,
            )
            records += [(seed, split, p) for split, p in predictions]
        summary = {
            "variant": variant,
            "stage": STAGE,
            "backbone": backbone,
            "tower": tower,
            "hparams": hparams,
            "ranker": ranker,
            "params_digest": params.digest(get_stage(STAGE).params),
            "seeds": per_seed,
        }
        write_variant(tmp, records, summary)
    return {"variant": variant, **{f"seed{s}_valid_auc": v["valid_auc"] for s, v in per_seed.items()}}
