"""Stages features -> train -> evaluate on a generated dataset: outputs, reload, figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from assets import evaluate, features, train
from assets.split import split_table
from llm4ctr.params import Params
from tests.fixtures_params import project_params
from tests.fixtures_tables import make_interactions, write_split_files


def _params() -> Params:
    """params.yaml with two small zoo models, two seeds and a two-epoch budget."""
    return project_params({
        "features.min_count": 1, "features.n_bins": 4,
        "ctr.models": ["fm", "dnn"], "ctr.hparams": {"dnn": {"hidden_units": [16]}},
        "train.seeds": [3, 4], "train.max_epochs": 2, "train.batch_size": 256, "train.progress": False,
        "train.patience": 1,
        "evaluate.base_model": "fm", "evaluate.longtail_share": 0.2,
    })  # fmt: skip


@pytest.fixture
def root(tmp_path: Path) -> Path:
    table = make_interactions(n_users=80, n_items=50, per_user=25, scenarios="age")
    splits = split_table(table, "random", (0.8, 0.1, 0.1), seed=0)
    write_split_files(tmp_path, splits)
    return tmp_path


def test_train_writes_predictions_and_loadable_checkpoints(root):
    from models.trainer import load_model

    params = _params()
    features.run(params, root)
    meta = train.run(params, root, variant="dnn")
    out = root / "artifacts" / "train" / "ml-100k" / "dnn"
    assert set(meta) >= {"model", "seed3_valid_auc", "seed4_valid_auc"}
    preds = pd.read_parquet(out / "predictions.parquet")
    encoder, arrays = features.load_encoded(root, "ml-100k")
    assert set(preds["seed"]) == {3, 4} and set(preds["split"]) == {"valid", "test"}
    assert (preds.groupby(["seed", "split"]).size().loc[(3, "test")]) == len(arrays["test"]["label"])
    import torch

    model = load_model(out / "seed3")
    # the checkpoint rebuilds the configured DNN (ctr.hparams.dnn: one hidden layer of 16), not the default MLP
    assert type(model).__name__ == "DNN" and model.build_config["hparams"]["hidden_units"] == [16]
    assert [m.out_features for m in model.mlp.modules() if isinstance(m, torch.nn.Linear)] == [16]

    batch = {k: torch.as_tensor(v) for k, v in arrays["test"].items() if k != "label"}
    with torch.inference_mode():
        offline = torch.sigmoid(model(batch)["logit"]).numpy()
    saved = preds[(preds.seed == 3) & (preds.split == "test")].sort_values("row")["prob"].to_numpy()
    np.testing.assert_allclose(offline, saved, rtol=1e-5, atol=1e-6)


def test_evaluate_matches_independent_computation(root):
    params = _params()
    features.run(params, root)
    for model in ("fm", "dnn"):
        train.run(params, root, variant=model)
    meta = evaluate.run(params, root)
    assert meta["models"] == 2
    metrics = (root / "artifacts" / "evaluate" / "ml-100k" / "metrics.json").read_text()
    import json

    entry = json.loads(metrics)
    test = pd.read_parquet(root / "artifacts" / "split" / "ml-100k" / "test.parquet")
    preds = pd.read_parquet(root / "artifacts" / "train" / "ml-100k" / "dnn" / "predictions.parquet")
    per_seed = [
        roc_auc_score(test["label"], g.sort_values("row")["prob"])
        for _, g in preds[preds.split == "test"].groupby("seed")
    ]
    assert entry["dnn"]["auc"] == pytest.approx(np.mean(per_seed), abs=1e-6)
    assert entry["dnn"]["relaimpr"] == pytest.approx(
        (entry["dnn"]["auc"] - entry["fm"]["auc"]) / entry["fm"]["auc"], abs=1e-5
    )
    assert entry["fm"]["relaimpr"] == 0.0
    assert entry["dnn"]["auc_seeds"] == pytest.approx(per_seed, abs=1e-6)

    # AUC by the item's training interactions, recomputed from the split files
    train_split = pd.read_parquet(root / "artifacts" / "split" / "ml-100k" / "train.parquet")
    counts = test["item_id"].map(train_split["item_id"].value_counts()).fillna(0).to_numpy()
    rows = (counts >= 21) & (counts <= 50)
    by_count = [
        roc_auc_score(test["label"][rows], g.sort_values("row")["prob"].to_numpy()[rows])
        for _, g in preds[preds.split == "test"].groupby("seed")
    ]
    assert entry["dnn"]["per_item_count"]["21-50"] == pytest.approx(np.mean(by_count), abs=1e-6)
    results = json.loads((root / "artifacts" / "evaluate" / "ml-100k" / "results.json").read_text())
    assert results["split_method"] == "random" and results["segments"]["item_count_rows"]["21-50"] == rows.sum()
    png = root / meta["auc_by_item_count_png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "by the item's interactions in the training split" in meta["results_md"]
    from orchestration.metadata import to_metadata  # what the Dagster asset shows: the plot inline

    shown = to_metadata(meta, root)
    for figure in ("auc_by_item_count", "auc_by_segment", "roc", "calibration"):
        assert shown[figure].value.startswith(f"![{figure}](data:image/png;base64,iVBORw0KGgo")
    table = shown["scores"].value  # every variant, best first, with its segment AUCs
    assert [r.data["model"] for r in table.records] == sorted(entry, key=lambda m: -entry[m]["auc"])
    assert (
        table.records[0].data["auc_lt_user&lt_item"]
        == entry[table.records[0].data["model"]]["per_segment"]["lt_user&lt_item"]
    )
    assert shown["results_file"].path == str(root.resolve() / "artifacts" / "evaluate" / "ml-100k" / "results.md")
    assert set(entry["dnn"]["per_segment"]) == {
        "lt_user&lt_item",
        "head_user&lt_item",
        "lt_user&head_item",
        "head_user&head_item",
    }
    assert set(entry["dnn"]["per_scenario"]) == set(test["scenario"].astype(str))
    assert not (root / "docs").exists() and not (root / "README.md").exists()  # evaluate touches no doc
    (root / "README.md").write_text("# project\n\nhand-written\n")
    evaluate.publish(root, params)
    evaluate.publish(root, params)  # publishing again replaces the sections instead of appending
    doc = (root / "docs" / "RESULTS.md").read_text()
    assert doc.count("BEGIN evaluate ml-100k") == 1 and "| dnn | train |" in doc
    readme = (root / "README.md").read_text()
    assert readme.startswith("# project\n\nhand-written\n") and readme.count("BEGIN evaluate zoo ml-100k") == 1
    assert "| dnn | " in readme and "| fm | " in readme
    roc = pd.read_csv(root / "artifacts" / "evaluate" / "ml-100k" / "roc" / "dnn.csv")
    assert list(roc.columns) == ["fpr", "tpr"] and roc["tpr"].is_monotonic_increasing


def test_evaluate_without_predictions_names_the_problem(root):
    from llm4ctr.errors import DataError

    with pytest.raises(DataError, match="no predictions.parquet under artifacts/"):
        evaluate.run(_params(), root)


def test_evaluate_ignores_a_run_still_being_written(root):
    """A predictions file inside a `.tmp-` folder (a training run in progress, or killed) is not a method."""
    from llm4ctr.errors import DataError

    leftover = root / "artifacts" / "train" / "ml-100k" / ".tmp-dcnv2-abc123"
    leftover.mkdir(parents=True)
    pd.DataFrame({"row": [0], "seed": [1], "split": ["test"], "prob": [0.5]}).to_parquet(
        leftover / "predictions.parquet"
    )
    with pytest.raises(DataError, match="no predictions.parquet under artifacts/"):
        evaluate.run(_params(), root)
