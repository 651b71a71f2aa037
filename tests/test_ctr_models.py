"""The model zoo: output contract, learning, OOV robustness, save/load, registry errors, layer maths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llm4ctr.errors import ParamsError
from models.ctr import MODELS, build_model, hyperparameters
from models.layers import FeatureEmbedding, FMInteraction, InnerProduct
from models.trainer import load_model, save_model
from tests.fixtures_ctr import TINY, encoded, head
from tests.fixtures_tables import make_interactions

NAMES = sorted(MODELS)


def _batch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {
        k: torch.as_tensor(v, dtype=torch.float32 if k in ("label", "dense") else torch.int64)
        for k, v in arrays.items()
    }


def _model(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model(name, encoded()[0].vocab_sizes, **TINY[name], **extra)


def test_registry_has_the_ten_paper_baselines():
    assert set(MODELS) == {"fm", "dnn", "deepfm", "xdeepfm", "ipnn", "dcn", "dcnv2", "autoint", "fignn", "fgcnn"}
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_output_contract(name):
    model = _model(name)
    out = model(_batch(head(encoded()[1], 7)))
    assert out["logit"].shape == (7,)
    assert out["q"].shape == (7, model.q_dim)
    assert torch.isfinite(out["logit"]).all() and torch.isfinite(out["q"]).all()


@pytest.mark.parametrize("name", NAMES)
def test_dense_input_becomes_an_extra_field(name):
    model = _model(name, dense_dim=5)
    assert model.num_fields == len(encoded()[0].vocab_sizes) + 1
    batch = _batch(head(encoded()[1], 6))
    batch["dense"] = torch.randn(6, 5)
    logit = model(batch)["logit"]
    batch["dense"] = batch["dense"] + 1.0
    assert logit.shape == (6,)
    assert not torch.allclose(model(batch)["logit"], logit)  # the dense vector reaches the output


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases(name):
    model = _model(name)
    batch = _batch(head(encoded()[1], 512))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)["logit"], batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_unseen_and_missing_values_predict_finite(name):
    encoder = encoded()[0]
    frame = make_interactions(n_rows=5, seed=99)
    frame["user_id"] = ["new-user"] * 5
    frame.loc[0, "item_id"] = "new-item"
    frame.loc[1, "genres"] = "Western|Musical"
    frame.loc[2, ["age", "year", "gender"]] = pd.NA
    arrays = encoder.transform(frame)
    assert (arrays["user_id"] == 1).all()
    model = _model(name).eval()
    with torch.no_grad():
        logit = model(_batch(arrays))["logit"]
    assert torch.isfinite(logit).all()


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_identical_predictions(name, tmp_path):
    model = _model(name, seed=3).eval()
    batch = _batch(head(encoded()[3], 50))
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch)["logit"], model(batch)["logit"], rtol=0, atol=0)


def test_build_model_rejects_unknown_names_and_hyperparameters():
    vocab = {"user_id": 5}
    with pytest.raises(ParamsError, match="unknown CTR model 'gbdt'"):
        build_model("gbdt", vocab)
    with pytest.raises(ParamsError, match="hidden_unit"):
        build_model("dnn", vocab, hidden_unit=[8])
    assert build_model("DCNv2", vocab).build_config["name"] == "dcnv2"
    assert hyperparameters("dnn")["embedding_dim"] == 16


def test_multi_valued_embedding_is_the_mean_over_non_padding_ids():
    layer = FeatureEmbedding({"genres": 6, "user_id": 4}, embedding_dim=3)
    ids = torch.tensor([[2, 3, 0], [5, 0, 0]])
    out = layer({"genres": ids, "user_id": torch.tensor([1, 2])})
    weight = layer.tables["genres"].weight
    assert out.shape == (2, 2, 3)
    torch.testing.assert_close(out[0, 0], (weight[2] + weight[3]) / 2)
    torch.testing.assert_close(out[1, 0], weight[5])
    torch.testing.assert_close(out[:, 1], layer.tables["user_id"].weight[[1, 2]])


def test_fm_and_inner_product_match_brute_force_pairs():
    emb = torch.randn(4, 5, 3)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    brute = torch.stack([(emb[:, i] * emb[:, j]).sum(-1) for i, j in pairs], dim=1)
    torch.testing.assert_close(InnerProduct(5)(emb), brute)
    torch.testing.assert_close(FMInteraction()(emb).sum(-1), brute.sum(-1))
