"""Stages clickprompt_pretrain -> clickprompt on a generated dataset with a tiny random BERT and tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from assets import clickprompt, evaluate, features, text
from assets.split import split_table
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from tests.fixtures_params import PROMPTS_CONFIG, project_params
from tests.fixtures_tables import make_interactions, write_split_files

WORDS = (
    "user id is gender male female age occupation zipcode movie title genre action comedy drama horror romance "
    "sci fi thriller war year unknown , . - ( )"
).split()
TINY = {
    "prompts.config": PROMPTS_CONFIG, "features.n_bins": 4,
    "ctr.hparams": {"dcnv2": {"embedding_dim": 8, "num_cross_layers": 1, "hidden_units": [16]}},
    "train.seeds": [3, 4], "train.max_epochs": 2, "train.batch_size": 256, "train.progress": False, "train.patience": 1,
    "evaluate.base_model": "dcnv2",
    "clickprompt.ctr_model": "dcnv2", "clickprompt.num_prompts": 2, "clickprompt.max_length": 48,
    "clickprompt.subsample_seed": 0,
    "clickprompt.pretrain.variants": ["layerwise"], "clickprompt.pretrain.rows": 300,
    "clickprompt.pretrain.new_lr": 1e-3, "clickprompt.pretrain.plm_lr": 1e-3, "clickprompt.pretrain.batch_size": 64,
    "clickprompt.pretrain.epochs": 1, "clickprompt.pretrain.max_steps": 3, "clickprompt.pretrain.warmup": 0.0,
    "clickprompt.pretrain.checkpoint_every": 2, "clickprompt.pretrain.seed": 0, "clickprompt.pretrain.progress": False,
    "clickprompt.finetune.variants": ["clickprompt_wo_plm", "clickprompt_with_plm"],
    "clickprompt.finetune.rows": 300, "clickprompt.finetune.valid_rows": 40, "clickprompt.finetune.plm_seeds": [5],
    "clickprompt.finetune.pooling": "cls", "clickprompt.finetune.plm_lr": 0.0, "clickprompt.finetune.head_units": [8],
    "clickprompt.finetune.alpha": 0.5, "clickprompt.finetune.train.batch_size": 128,
    "clickprompt.finetune.train.eval_batch_size": 512, "clickprompt.finetune.train.max_epochs": 1,
    "clickprompt.finetune.train.patience": 1,
}  # fmt: skip


def _params(tmp: Path, **over) -> Params:
    """params.yaml at the tiny budgets above, with the tiny BERT of project ``tmp`` as the PLM."""
    return project_params({**TINY, "plm.name": str(tmp / "plm"), **over})


def make_project(tmp: Path) -> Path:
    """A generated split, its features and texts, and a tiny random BERT folder (no MLM head, like MiniLM) with
    tokenizer."""
    table = make_interactions(n_users=40, n_items=30, per_user=15, scenarios="age")
    splits = split_table(table, "random", (0.8, 0.1, 0.1), seed=0)
    write_split_files(tmp, splits)
    features.run(_params(tmp), tmp)
    text.run(_params(tmp), tmp)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *(str(d) for d in range(10)),
        *(f"##{d}" for d in range(10)),
    ]
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    ).save_pretrained(tmp / "plm")
    BertTokenizer(str(tmp / "vocab.txt")).save_pretrained(tmp / "plm")
    return tmp


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("clickprompt"))


def _rebuilt_plm(params: Params, root: Path, variant: str, seed: int) -> Path:
    """Rebuild a with-PLM variant's seed from its stage output (``load_with_plm``), check it predicts the test
    probabilities the stage wrote (rows back in file order), and return the PLM folder it names."""
    from transformers import AutoTokenizer

    from models.trainer import TrainConfig, Trainer

    encoder, arrays = features.load_encoded(root, "ml-100k")
    out = root / "artifacts" / "clickprompt" / "ml-100k" / variant
    model, plm = clickprompt.load_with_plm(params, root, encoder.vocab_sizes, out / f"seed{seed}")
    test = clickprompt.text_arrays(
        arrays["test"],
        clickprompt.texts(root, "ml-100k")["test"],
        np.arange(len(arrays["test"]["label"])),
        AutoTokenizer.from_pretrained(plm),
        48,
    )
    preds = pd.read_parquet(out / "predictions.parquet")
    saved = preds[(preds.split == "test") & (preds.seed == seed)].sort_values("row")["prob"].to_numpy()
    np.testing.assert_allclose(Trainer(model, TrainConfig(progress=False)).predict(test), saved, rtol=1e-5, atol=1e-6)
    return plm


def test_pretrain_then_finetune_both_modes_write_the_contract_layout(root):
    from models.trainer import load_model

    params = _params(root)
    meta = clickprompt.pretrain(params, root, variant="layerwise")
    ckpt = root / "artifacts" / "clickprompt_pretrain" / "ml-100k" / "layerwise"
    summary = json.loads((ckpt / "summary.json").read_text())
    assert meta["steps"] == summary["steps"] == 3 and summary["rows"] == 300
    assert summary["fresh_head_params"]  # no MLM head in the checkpoint: trained from the tied embeddings
    curve = root / "artifacts" / "curves" / "clickprompt_pretrain" / "ml-100k" / "layerwise" / "plots" / "metrics"
    rows = (curve / f"seed{params.get_path('clickprompt.pretrain.seed')}" / "loss.tsv").read_text().splitlines()
    assert rows[0] == "step\tloss" and [int(r.split()[0]) for r in rows[1:]] == [h["step"] for h in summary["history"]]
    assert (ckpt / "ctr" / "model.json").is_file() and (ckpt / "plm" / "config.json").is_file()

    _, arrays = features.load_encoded(root, "ml-100k")
    for variant, seeds in (("clickprompt_wo_plm", {3, 4}), ("clickprompt_with_plm", {5})):
        clickprompt.finetune(params, root, variant=variant)
        out = root / "artifacts" / "clickprompt" / "ml-100k" / variant
        preds = pd.read_parquet(out / "predictions.parquet")
        assert set(preds["seed"]) == seeds
        for split in ("valid", "test"):  # every row of test; valid: the early-stopping rows with the PLM
            rows = preds[(preds.split == split) & (preds.seed == min(seeds))]["row"].to_numpy()
            expected = np.arange(len(arrays[split]["label"]))
            if split == "valid" and variant == "clickprompt_with_plm":
                expected = clickprompt.subsample(len(expected), 40, 0)
            np.testing.assert_array_equal(rows, expected)
        assert preds["prob"].between(0, 1).all()
        assert set(json.loads((out / "summary.json").read_text())["seeds"]) == {str(s) for s in seeds}

    # the w/o-PLM checkpoint is a plain zoo checkpoint predicting exactly what was written
    out = root / "artifacts" / "clickprompt" / "ml-100k" / "clickprompt_wo_plm"
    model = load_model(out / "seed3")
    batch = {k: torch.as_tensor(v) for k, v in arrays["test"].items() if k != "label"}
    with torch.inference_mode():
        probs = torch.sigmoid(model(batch)["logit"]).numpy()
    preds = pd.read_parquet(out / "predictions.parquet")
    saved = preds[(preds.seed == 3) & (preds.split == "test")].sort_values("row")["prob"].to_numpy()
    np.testing.assert_allclose(probs, saved, rtol=1e-5, atol=1e-6)

    # the with-PLM output rebuilds the model that wrote the test predictions
    assert _rebuilt_plm(params, root, "clickprompt_with_plm", 5) == ckpt / "plm"

    meta = evaluate.run(params, root)
    assert meta["models"] == 2 and set(
        json.loads((root / "artifacts" / "evaluate" / "ml-100k" / "metrics.json").read_text())
    ) == {"clickprompt_wo_plm", "clickprompt_with_plm"}


def test_adding_a_plm_seed_resumes_the_trained_one(root):
    """Seed 5 was trained by the test above: a second seed reuses its work dir (one digest, not two)."""
    params = _params(root, **{"clickprompt.finetune.plm_seeds": [5, 6]})
    out = root / "artifacts" / "clickprompt" / "ml-100k" / "clickprompt_with_plm"
    trained = json.loads((out / "summary.json").read_text())["seeds"]["5"]
    clickprompt.finetune(params, root, variant="clickprompt_with_plm")
    resumed = json.loads((out / "summary.json").read_text())["seeds"]["5"]
    assert resumed["train_seconds"] == trained["train_seconds"]  # the training it reloaded, not the reload time
    work = root / "artifacts" / ".work" / "clickprompt" / "ml-100k" / "clickprompt_with_plm"
    assert sorted(p.name.split("-")[0] for p in work.iterdir()) == ["seed5", "seed6"]
    preds = pd.read_parquet(
        root / "artifacts" / "clickprompt" / "ml-100k" / "clickprompt_with_plm" / "predictions.parquet"
    )
    assert set(preds["seed"]) == {5, 6}


@pytest.mark.parametrize("variant", ["clickprompt_wo_both", "ctr_same_budget"])
def test_variants_without_pretraining_need_no_checkpoint_and_train_on_the_budget(root, variant):
    clickprompt.finetune(_params(root), root, variant=variant)
    summary = json.loads((root / "artifacts" / "clickprompt" / "ml-100k" / variant / "summary.json").read_text())
    assert summary["pretrained_from"] is None
    assert (summary["train_rows"], summary["early_stopping_valid_rows"]) == (300, 40)
    if variant == "clickprompt_wo_both":  # no checkpoint to start from: the public PLM + the saved weights
        assert _rebuilt_plm(_params(root), root, variant, 5) == root / "plm"


def test_user_errors_name_the_setting(root):
    params = _params(root)
    with pytest.raises(ParamsError, match="unknown variant 'sideways'"):
        clickprompt.finetune(params, root, variant="sideways")
    with pytest.raises(DataError, match="'input' to clickprompt.pretrain.variants"):
        clickprompt.finetune(params, root, variant="clickprompt_wo_layerwise")
    with pytest.raises(ParamsError, match="plm_lr must be >= 0"):
        clickprompt.finetune(
            _params(root, **{"clickprompt.finetune.plm_lr": -1e-5}), root, variant="clickprompt_wo_both"
        )
    misspelt = _params(root)
    misspelt["clickprompt"]["pretrain"]["lr"] = 1.0  # not a key of params.yaml, so not an override
    with pytest.raises(ParamsError, match="unknown setting"):
        clickprompt.pretrain(misspelt, root, variant="plain")
    with pytest.raises(ParamsError, match="row budget"):
        clickprompt.subsample(10, 0, 0)
    with pytest.raises(DataError, match="seed9: not a with-PLM finetuning output"):
        clickprompt.load_with_plm(
            params, root, {}, root / "artifacts" / "clickprompt" / "ml-100k" / "clickprompt_with_plm" / "seed9"
        )


def test_a_moved_project_reloads_every_checkpoint_to_the_same_predictions(tmp_path):
    """Artifacts name the paths they need relative to the project root: after the whole project folder is
    moved, the PA-MLM, w/o-PLM and with-PLM checkpoints reload from the new place and predict exactly what
    they did, evaluate gives the same figures, and no file under artifacts/ names the old place."""
    from models.clickprompt import ClickPromptNet
    from models.trainer import load_model

    before = make_project(tmp_path / "before")
    params = _params(before, **{"train.seeds": [3]})
    clickprompt.pretrain(params, before, variant="layerwise")
    for variant in ("clickprompt_wo_plm", "clickprompt_with_plm"):
        clickprompt.finetune(params, before, variant=variant)
    evaluate.run(params, before)
    pretrained = Path("artifacts") / "clickprompt_pretrain" / "ml-100k" / "layerwise"
    outputs = Path("artifacts") / "clickprompt" / "ml-100k"

    def network_states(root: Path) -> torch.Tensor:
        _, arrays = features.load_encoded(root, "ml-100k")
        tokenizer = BertTokenizer.from_pretrained(root / pretrained / "plm")
        rows = clickprompt.text_arrays(
            arrays["test"], clickprompt.texts(root, "ml-100k")["test"], np.arange(16), tokenizer, 48
        )
        batch = {k: torch.as_tensor(v) for k, v in rows.items() if k != "label"}
        with torch.inference_mode():
            return ClickPromptNet.load(root / pretrained).eval()(batch)["hidden"]

    states = network_states(before)
    metrics = (before / "artifacts" / "evaluate" / "ml-100k" / "metrics.json").read_text()

    (tmp_path / "elsewhere").mkdir()
    after = Path(shutil.move(before, tmp_path / "elsewhere" / "project"))
    assert not before.exists()
    traces = [
        p.relative_to(after)
        for p in (after / "artifacts").rglob("*")
        if p.is_file() and str(before).encode() in p.read_bytes()
    ]
    assert not traces, f"artifacts naming the project's old place: {traces}"
    for summary in (
        outputs / "clickprompt_with_plm" / "summary.json",
        outputs / "clickprompt_with_plm" / "seed5" / "clickprompt.json",
    ):
        assert json.loads((after / summary).read_text())["pretrained_from"] == pretrained.as_posix()

    moved = _params(after, **{"train.seeds": [3]})  # the user's params now point at the moved PLM
    assert torch.equal(network_states(after), states)
    assert _rebuilt_plm(moved, after, "clickprompt_with_plm", 5) == after / pretrained / "plm"
    _, arrays = features.load_encoded(after, "ml-100k")
    batch = {k: torch.as_tensor(v) for k, v in arrays["test"].items() if k != "label"}
    with torch.inference_mode():
        probs = torch.sigmoid(load_model(after / outputs / "clickprompt_wo_plm" / "seed3")(batch)["logit"]).numpy()
    preds = pd.read_parquet(after / outputs / "clickprompt_wo_plm" / "predictions.parquet")
    np.testing.assert_allclose(probs, preds[preds.split == "test"].sort_values("row")["prob"], rtol=1e-5, atol=1e-6)
    evaluate.run(moved, after)
    assert (after / "artifacts" / "evaluate" / "ml-100k" / "metrics.json").read_text() == metrics
