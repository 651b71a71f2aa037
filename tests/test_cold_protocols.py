"""Under the cold protocols no method family reads validation/test interactions to get around them.

Each test builds a cold_item or cold_user split, then a *poisoned* copy whose held-out rows say
something else (labels flipped, every held-out row moved to another held-out user/item, timestamps
shifted): what a method learns from (vocabularies, prompts, sequences, pre-trained weights) must be
identical on both, and the held-out keys must take the documented fallback (OOV embedding, profile-only
prompt and default state, empty history)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from assets import clickprompt, features, prompts, text
from assets.learn import Catalogue, training_sequences
from assets.split import split_table
from models.features import OOV
from models.learn.sequences import histories_before
from tests.fixtures_params import PROMPTS_CONFIG, project_params
from tests.fixtures_tables import make_interactions, write_split_files
from tests.test_clickprompt_stages import _params as clickprompt_params
from tests.test_clickprompt_stages import make_project as clickprompt_project

KEYS = {"cold_item": "item_id", "cold_user": "user_id"}


def splits_of(method: str) -> dict[str, pd.DataFrame]:
    table = make_interactions(n_users=60, n_items=80, per_user=20, scenarios="age")
    return split_table(table, method, (0.8, 0.1, 0.1), seed=0)


def poisoned(splits: dict[str, pd.DataFrame], method: str) -> dict[str, pd.DataFrame]:
    """The same split whose valid/test rows tell a different story; train untouched. Held-out rows keep
    the protocol (a held-out key moves only to another held-out key of the same split)."""
    out = {"train": splits["train"]}
    rng = np.random.default_rng(1)
    for name in ("valid", "test"):
        frame = splits[name].copy()
        frame["label"] = 1 - frame["label"]
        key = KEYS[method]
        frame[key] = rng.permutation(frame[key].to_numpy())
        frame["timestamp"] = frame["timestamp"] + 1000
        out[name] = frame
    return out


@pytest.mark.parametrize("method", ["cold_item", "cold_user"])
def test_zoo_features_fit_on_train_only_and_held_out_keys_take_the_oov_embedding(tmp_path, method):
    """Zoo models, ClickPrompt's and LEARN's CTR side and the LLM4MSR backbones all read these arrays."""
    params = project_params({"prompts.config": PROMPTS_CONFIG})
    splits = splits_of(method)
    encoders = []
    for name, frames in (("clean", splits), ("poisoned", poisoned(splits, method))):
        write_split_files(tmp_path / name, frames, method)
        features.run(params, tmp_path / name)
        encoders.append((tmp_path / name / "artifacts" / "features" / "ml-100k" / "encoder.json").read_text())
        _, arrays = features.load_encoded(tmp_path / name, "ml-100k")
        for held_out in ("valid", "test"):
            assert (arrays[held_out][KEYS[method]] == OOV).all()  # the fallback: the OOV embedding
        assert (arrays["train"][KEYS[method]] != OOV).all()
    assert encoders[0] == encoders[1]


def test_user_prompts_come_from_train_only_and_cold_users_get_the_profile_only_prompt():
    """LLM4MSR: user and scenario prompts from training interactions; a cold user's prompt lists no
    liked item (n_liked 0 < llm4msr.cold_start_min_liked: the model uses its learned default state)."""
    config = prompts.load_config(project_params({"prompts.config": PROMPTS_CONFIG}), Path("."))
    splits = splits_of("cold_user")
    clean = prompts.build(splits, config, recent_n=5)
    dirty = prompts.build(poisoned(splits, "cold_user"), config, recent_n=5)
    for kind in ("scenario", "user"):  # built from training interactions
        pd.testing.assert_frame_equal(clean[kind], dirty[kind])
    # the profile is the user's own fields (content, like an item's text): it follows the user's rows
    poisoned_test = poisoned(splits, "cold_user")["test"].drop_duplicates("user_id")
    profiles = dirty["profile"].set_index("user_id")["text"]
    for row in poisoned_test.head(5).to_dict("records"):
        gender = {"F": "female", "M": "male"}[row["gender"]]
        assert profiles[str(row["user_id"])] == f"Age: {row['age']} Gender: {gender} Occupation: {row['occupation']}"
    users = clean["user"].set_index("user_id")
    held_out = set(splits["valid"]["user_id"].astype(str)) | set(splits["test"]["user_id"].astype(str))
    assert held_out and (users.loc[sorted(held_out), "n_liked"] == 0).all()
    assert (users.loc[sorted(set(users.index) - held_out), "n_liked"] > 0).any()


@pytest.mark.parametrize("method", ["cold_item", "cold_user"])
def test_learn_sequences_come_from_train_only_and_cold_users_have_an_empty_history(method):
    """LEARN: the towers train on training sequences only; a held-out row's user history holds training
    items strictly before it, so a cold user's is empty (the user tower's empty-history embedding)."""
    params = project_params({"learn.sequence": "all"})
    splits = splits_of(method)
    dirty = poisoned(splits, method)
    catalogue = Catalogue.of(splits)
    clean_seqs = training_sequences(params, splits, catalogue)
    dirty_seqs = training_sequences(params, dirty, catalogue)
    assert clean_seqs.items.keys() == dirty_seqs.items.keys()
    assert all(np.array_equal(clean_seqs.items[u], dirty_seqs.items[u]) for u in clean_seqs.items)
    test = splits["test"]
    histories = histories_before(clean_seqs, test["user_id"].astype(str), test["timestamp"], 10)
    train_items = set(catalogue.item_indices(splits["train"]))
    assert set(np.unique(histories)) - {0} <= train_items  # only items seen in training, 0 = padding
    if method == "cold_user":
        assert (histories == 0).all()
    else:
        assert (histories != 0).any()  # warm users keep their training history


def test_clickprompt_pretraining_reads_the_training_rows_only(tmp_path):
    """ClickPrompt: PA-MLM on training texts only (the with-PLM finetuning likewise trains on train rows):
    a poisoned held-out split gives bit-identical pre-trained weights."""
    weights = []
    for name in ("clean", "poisoned"):
        root = clickprompt_project(tmp_path / name)
        params = clickprompt_params(root)
        splits = splits_of("cold_item")
        write_split_files(root, splits if name == "clean" else poisoned(splits, "cold_item"), "cold_item")
        features.run(params, root)
        text.run(params, root)
        clickprompt.pretrain(params, root, "layerwise")
        folder = root / "artifacts" / "clickprompt_pretrain" / "ml-100k" / "layerwise"
        weights.append({p.name: load_file(p) for p in folder.rglob("*.safetensors")})
    assert weights[0] and weights[0].keys() == weights[1].keys()
    for file, tensors in weights[0].items():
        for key, value in tensors.items():
            assert torch.equal(value, weights[1][file][key]), f"{file}:{key}"
