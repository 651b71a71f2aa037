"""The split stage: methods, ratios, determinism (byte-identical files), cold shares, bad params."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from assets.split import SPLITS, cold_shares, split_table
from llm4ctr.errors import ParamsError

RATIOS = (0.8, 0.1, 0.1)


def _keys(df):
    return set(zip(df.user_id, df.item_id, df.timestamp))


@pytest.mark.parametrize("method", ["random", "global_time", "user_time"])
def test_split_partitions_every_row_once_at_the_ratios(interactions, method):
    splits = split_table(interactions, method, RATIOS, seed=7)
    sizes = [len(splits[s]) for s in SPLITS]
    assert sum(sizes) == len(interactions)
    for size, ratio in zip(sizes, RATIOS):
        assert abs(size / len(interactions) - ratio) <= 0.005
    all_keys = [_keys(splits[s]) for s in SPLITS]
    assert not (all_keys[0] & all_keys[1] or all_keys[0] & all_keys[2] or all_keys[1] & all_keys[2])
    assert set().union(*all_keys) == _keys(interactions)


def test_global_time_is_chronological(interactions):
    s = split_table(interactions, "global_time", RATIOS, seed=0)
    assert s["train"].timestamp.max() <= s["valid"].timestamp.min()
    assert s["valid"].timestamp.max() <= s["test"].timestamp.min()


def test_user_time_is_chronological_per_user(interactions):
    s = split_table(interactions, "user_time", RATIOS, seed=0)
    last_train = s["train"].groupby("user_id").timestamp.max()
    first_test = s["test"].groupby("user_id").timestamp.min()
    common = last_train.index.intersection(first_test.index)
    assert len(common) > 0
    assert (last_train[common] <= first_test[common]).all()
    # every user keeps 80% of their history in train: no cold users in valid/test
    assert cold_shares(s)["test"]["cold_user_share"] == 0.0


def test_random_split_depends_on_seed_only(interactions):
    a = split_table(interactions, "random", RATIOS, seed=1)
    b = split_table(interactions.sample(frac=1, random_state=3), "random", RATIOS, seed=1)
    c = split_table(interactions, "random", RATIOS, seed=2)
    assert a["test"].equals(b["test"])  # input row order does not matter
    assert not a["test"].equals(c["test"])


def test_cold_shares_count_unseen_users_and_items(interactions):
    splits = split_table(interactions, "random", RATIOS, seed=0)
    test = splits["test"].copy()
    test.loc[test.index[:5], "user_id"] = "unseen-user"
    shares = cold_shares({**splits, "test": test})
    assert shares["train"] == {"cold_user_share": 0.0, "cold_item_share": 0.0}
    assert shares["test"]["cold_user_share"] == pytest.approx(round(5 / len(test), 4))


@pytest.mark.parametrize(
    "ratios, method",
    [((0.7, 0.2), "random"), ((0.8, 0.1, 0.2), "random"), ((1.0, 0.0, 0.0), "random"), (RATIOS, "by_magic")],
)
def test_bad_split_params_name_the_parameter(interactions, ratios, method):
    with pytest.raises(ParamsError, match=r"split\.(ratios|method)"):
        split_table(interactions, method, ratios, seed=0)


def test_same_params_give_byte_identical_files(tmp_path, interactions):
    from assets.tables import write_table

    digests = []
    for run in range(2):
        splits = split_table(interactions, "random", RATIOS, seed=5)
        files = {}
        for name, df in splits.items():
            path = tmp_path / f"{run}-{name}.parquet"
            write_table(df, path)
            files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        digests.append(files)
    assert digests[0] == digests[1]
    assert np.unique(list(digests[0].values())).size == 3


@pytest.mark.parametrize(("method", "key"), [("cold_item", "item_id"), ("cold_user", "user_id")])
def test_cold_splits_hold_out_whole_items_or_users_at_the_ratios(tmp_path, method, key):
    from assets.validation import validate_split
    from tests.fixtures_tables import make_interactions

    table = make_interactions(n_users=100, n_items=400, per_user=20, scenarios="age")
    splits = split_table(table, method, RATIOS, seed=3)
    for name, ratio in zip(SPLITS, RATIOS):
        assert abs(len(splits[name]) / len(table) - ratio) <= 0.005
    seen = set(splits["train"][key])
    assert not seen & set(splits["valid"][key]) and not seen & set(splits["test"][key])
    assert not set(splits["valid"][key]) & set(splits["test"][key])
    shares = cold_shares(splits)
    assert (
        shares["valid"][f"cold_{key.split('_')[0]}_share"] == 1.0 == shares["test"][f"cold_{key.split('_')[0]}_share"]
    )
    assert validate_split(splits, "ml-100k", method, tmp_path / "gx", "test").success
    again = split_table(table, method, RATIOS, seed=3)
    assert all(again[name].equals(splits[name]) for name in SPLITS)  # seeded and deterministic
    other = split_table(table, method, RATIOS, seed=4)
    assert set(other["test"][key]) != set(splits["test"][key])


def test_a_held_out_item_seen_in_training_fails_the_cold_item_suite(tmp_path):
    import pandas as pd

    from assets.validation import validate_split
    from tests.fixtures_tables import make_interactions

    splits = split_table(
        make_interactions(n_users=100, n_items=400, per_user=20, scenarios="age"), "cold_item", RATIOS, seed=3
    )
    leaked = splits["test"].iloc[[0]].copy()  # the same item, a new interaction key
    leaked["user_id"] = pd.Series(["leaked-user"], index=leaked.index, dtype=splits["train"]["user_id"].dtype)
    splits["train"] = pd.concat([splits["train"], leaked], ignore_index=True)
    report = validate_split(splits, "ml-100k", "cold_item", tmp_path / "gx", "test")
    assert not report.success and "split cold item_id" in report.summary
