"""LEARN's stages on a generated project: towers, embedding export, enhanced ranker, and the leak checks.

A tiny MovieLens-shaped table is split and encoded; the item content embeddings are a generated
`hidden_states_item` export (random vectors), so no LLM is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

from assets import features, learn
from assets.split import split_table
from assets.tables import write_table
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.paths import artifact_dir
from models.learn.sequences import sample_windows
from tests.fixtures_params import project_params
from tests.fixtures_tables import make_interactions, write_split_files

CONTENT_DIM = 12
TINY = {
    "train.seeds": [1, 2],
    "train.max_epochs": 2,
    "train.progress": False,
    "train.batch_size": 256,
    "ctr.hparams": {"dcnv2": {"embedding_dim": 8, "num_cross_layers": 1, "hidden_units": [16]}},
    "learn.tower.model_dim": 16,
    "learn.tower.output_dim": 8,
    "learn.tower.num_layers": 1,
    "learn.tower.num_heads": 2,
    "learn.tower.dropout": 0.0,
    "learn.tower.temperature": 0.1,
    "learn.tower.id_embedding_dim": 8,
    "learn.tower_train.lr": 3e-3,
    "learn.tower_train.weight_decay": 0.0,
    "learn.tower_train.batch_size": 64,
    "learn.tower_train.max_epochs": 2,
    "learn.tower_train.patience": 2,
    "learn.tower_train.history_len": 6,
    "learn.tower_train.target_len": 3,
    "learn.tower_train.logq_correction": True,
    "learn.tower_train.num_threads": 1,
    "learn.tower_train.progress": False,
    "learn.ranker.aux_hidden_units": [8, 4],
    "learn.ranker.aux_head_units": [4],
}


def _params(**overrides):
    return project_params({**TINY, **overrides})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Split + encoded features + a content-embedding export with every item (one never seen in training)."""
    torch.set_num_threads(1)
    table = make_interactions(n_users=30, n_items=25, per_user=12, scenarios="age")
    splits = split_table(table, "random", [0.8, 0.1, 0.1], 2024)
    cold = splits["train"]["item_id"] == "3"  # item 3 becomes cold: only in the test split
    splits["test"] = pd.concat([splits["test"], splits["train"][cold]], ignore_index=True)
    splits["train"] = splits["train"][~cold].reset_index(drop=True)
    write_split_files(tmp_path, splits)
    features.run(_params(), tmp_path)
    items = sorted(set(table["item_id"].astype(str))) + ["999"]  # 999: in the catalogue export only
    states = torch.nn.functional.normalize(
        torch.randn(len(items), CONTENT_DIM, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    export = artifact_dir(tmp_path, "hidden_states_item", "ml-100k")
    export.mkdir(parents=True)
    save_file({"states": states}, str(export / "states.safetensors"))
    write_table(pd.DataFrame({"item_id": items[::-1]}).assign(key="k", tokens=5), export / "index.parquet")  # any order
    return tmp_path


def test_tower_training_reads_only_training_interactions(project: Path):
    params = _params()
    splits = learn.load_splits(project, "ml-100k")
    catalogue = learn.Catalogue.of(splits)
    seqs = learn.training_sequences(params, splits, catalogue)
    history, targets = sample_windows(seqs, 6, 3, np.random.default_rng(0))
    train_pairs = set(zip(splits["train"]["user_id"].astype(str), catalogue.item_indices(splits["train"])))
    item_users = {u: set(items) for u, items in seqs.items.items()}
    assert sum(len(v) for v in item_users.values()) == len(splits["train"])
    for user, items in seqs.items.items():
        assert {(user, int(i)) for i in items} <= train_pairs
    # every window's items are one user's training items
    users_of = {}
    for user, items in seqs.items.items():
        for i in items:
            users_of.setdefault(int(i), set()).add(user)
    for h, t in zip(history, targets):
        real = [int(x) for x in np.r_[h, t] if x]
        assert set.intersection(*(users_of[i] for i in real))
    # replacing every valid/test row changes nothing the tower trains on
    shuffled = {**splits, "valid": splits["valid"].assign(item_id="1"), "test": splits["test"].iloc[:0]}
    again = learn.training_sequences(params, shuffled, catalogue)
    assert all(np.array_equal(again.items[u], seqs.items[u]) for u in seqs.items)
    positive = learn.training_sequences(_params(**{"learn.sequence": "positive"}), splits, catalogue)
    assert sum(len(v) for v in positive.items.values()) == int(splits["train"]["label"].sum())


def test_tower_embed_and_ranker_stages_write_their_outputs(project: Path):
    params = _params()
    for tower in ("learn", "id"):
        figures = learn.run_tower(params, project, tower)
        assert 0.0 <= figures["test_recall@10"] <= 1.0
    report = json.loads((artifact_dir(project, "learn_tower", "ml-100k") / "learn" / "retrieval.json").read_text())
    assert set(report["seeds"]) == {"1", "2"} and report["queries"]["test"] > 0
    assert {"recall@10", "ndcg@10", "lt_item_recall@10", "cold_item_ndcg@10"} <= set(report["seeds"]["1"]["test"])
    assert report["seeds"]["1"]["test"]["cold_item_queries"] > 0  # item 3's test rows
    metrics = json.loads((artifact_dir(project, "learn_tower", "ml-100k") / "retrieval-id.json").read_text())
    assert metrics["tower"] == "id"
    curves = project / "artifacts" / "curves" / "learn_tower" / "ml-100k" / "learn" / "plots" / "metrics"
    for seed in ("seed1", "seed2"):  # one curve per epoch metric and seed, x = epoch
        assert {p.name for p in (curves / seed).iterdir()} >= {"train_loss.tsv", "ndcg@10.tsv"}
        steps = [line.split("\t")[0] for line in (curves / seed / "train_loss.tsv").read_text().splitlines()]
        assert steps[0] == "step" and steps[1:] == [str(e) for e in range(1, len(steps))]

    learn.run_embed(params, project, "learn")
    splits = learn.load_splits(project, "ml-100k")
    tensors = load_file(str(artifact_dir(project, "learn_embed", "ml-100k") / "learn" / "seed1" / learn.EMBEDDINGS))
    assert tensors["items"].shape == (25 + 1, 8)  # the 25 items of the splits + row 0 (padding); 999 is not one
    np.testing.assert_allclose(np.linalg.norm(tensors["items"][1:], axis=1), 1.0, rtol=1e-5)
    for split, frame in splits.items():
        assert tensors[f"user_{split}"].shape == (len(frame), 8)
    dense = learn.learn_features(project, "ml-100k", "learn", 1, splits)
    assert dense["test"].shape == (len(splits["test"]), 16)

    figures = learn.run_ranker(params, project, "dcnv2_learn")
    assert set(figures) == {"variant", "seed1_valid_auc", "seed2_valid_auc"}
    out = artifact_dir(project, "learn", "ml-100k") / "dcnv2_learn"
    predictions = pd.read_parquet(out / "predictions.parquet")
    for split in ("valid", "test"):
        rows = predictions[(predictions["split"] == split) & (predictions["seed"] == 1)]["row"]
        assert rows.tolist() == list(range(len(splits[split])))
    assert predictions["prob"].between(0, 1).all()
    assert (out / "seed1" / "model.json").is_file()
    from models.learn import load_ranker

    assert load_ranker(out / "seed2").backbone.embedding.dense.in_features == 16 + 4


def test_towers_train_on_the_cold_user_protocol_without_validation_queries(project: Path, caplog):
    """Under cold_user no validation user has a training history, so no query can pick an epoch: every
    epoch runs, the last is kept, the user embedding of a held-out row is the empty-history one, and the
    ranker trains on top."""
    table = make_interactions(n_users=30, n_items=25, per_user=12, scenarios="age")
    write_split_files(project, split_table(table, "cold_user", [0.8, 0.1, 0.1], 2024), "cold_user")
    params = _params(**{"learn.tower_train.max_epochs": 3, "learn.tower_train.patience": 1})
    features.run(params, project)
    with caplog.at_level("WARNING"):
        learn.run_tower(params, project, "learn")
    assert "no validation query has a training history" in caplog.text
    report = json.loads((artifact_dir(project, "learn_tower", "ml-100k") / "learn" / "retrieval.json").read_text())
    assert report["queries"] == {"valid": 0, "test": 0} and report["dropped"]["valid"] > 0
    assert {(s["best_epoch"], s["epochs"]) for s in report["seeds"].values()} == {(3, 3)}
    again = learn.run_tower(params, project, "learn")  # a finished run's checkpoints: resumed, nothing to train
    assert again["tower"] == "learn"
    learn.run_embed(params, project, "learn")
    tensors = load_file(str(artifact_dir(project, "learn_embed", "ml-100k") / "learn" / "seed1" / learn.EMBEDDINGS))
    held_out = tensors["user_test"]
    assert np.allclose(held_out, held_out[0])  # every cold user: the same empty-history embedding
    figures = learn.run_ranker(params, project, "dcnv2_learn")
    assert 0.0 <= figures["seed1_valid_auc"] <= 1.0


def test_content_export_must_cover_every_item(project: Path):
    export = artifact_dir(project, "hidden_states_item", "ml-100k")
    index = pd.read_parquet(export / "index.parquet")
    write_table(index[index["item_id"] != "3"], export / "index.parquet")
    with pytest.raises(DataError, match="no content embedding for 1 item"):
        learn.run_tower(_params(), project, "learn")


def test_bad_names_raise_params_errors(project: Path):
    with pytest.raises(ParamsError, match="unknown LEARN tower 'v9'"):
        learn.run_tower(_params(), project, "v9")
    with pytest.raises(ParamsError, match="<zoo model>_<tower>"):
        learn.run_ranker(_params(), project, "dcnv2_nope")
    with pytest.raises(ParamsError, match="learn.sequence"):
        learn.run_tower(_params(**{"learn.sequence": "clicks"}), project, "id")
    with pytest.raises(DataError, match="learn_embed"):
        learn.run_ranker(_params(), project, "dcnv2_learn")
