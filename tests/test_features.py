"""FeatureSpec / FeatureEncoder: vocabularies from train only, OOV handling, bucketization, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llm4ctr.errors import DataError
from models.features import OOV, PAD, FeatureEncoder, FeatureSpec, Field, default_spec
from tests.fixtures_tables import make_interactions

MOVIELENS_COLUMNS = [
    "user_id",
    "item_id",
    "rating",
    "label",
    "timestamp",
    "scenario",
    "gender",
    "age",
    "occupation",
    "zip",
    "title",
    "genres",
    "year",
]


def _frame(**columns) -> pd.DataFrame:
    return pd.DataFrame({k: pd.array(v) for k, v in columns.items()})


def test_default_spec_movielens_fields_and_kinds():
    spec = default_spec(MOVIELENS_COLUMNS)
    kinds = {f.name: f.kind for f in spec.fields}
    assert kinds == {
        "user_id": "categorical",
        "item_id": "categorical",
        "scenario": "categorical",
        "gender": "categorical",
        "age": "numeric",
        "occupation": "categorical",
        "zip": "categorical",
        "genres": "multi",
        "year": "numeric",
    }
    assert spec.names == [c for c in MOVIELENS_COLUMNS if c in kinds]  # table order is field order


def test_default_spec_generalises_to_bookcrossing_and_amazon():
    book = default_spec(
        ["user_id", "item_id", "label", "scenario", "location", "age", "title", "author", "year", "publisher"]
    )
    assert book.names == ["user_id", "item_id", "scenario", "location", "age", "author", "year", "publisher"]
    amazon = {
        f.name: f.kind
        for f in default_spec(["user_id", "item_id", "scenario", "title", "category", "brand", "price"]).fields
    }
    assert amazon == {
        "user_id": "categorical",
        "item_id": "categorical",
        "scenario": "categorical",
        "category": "multi",
        "brand": "categorical",
        "price": "categorical",
    }


def test_vocabulary_comes_from_train_only_and_unknowns_are_oov():
    spec = FeatureSpec((Field("user_id"),))
    encoder = FeatureEncoder.fit(_frame(user_id=["b", "a", "b", "c"]), spec)
    assert encoder.vocabs["user_id"] == ["a", "b", "c"]
    assert encoder.vocab_sizes == {"user_id": 5}  # pad + oov + 3
    out = encoder.transform(_frame(user_id=["a", "c", "zzz", None]))["user_id"]
    assert out.dtype == np.int64
    assert out.tolist() == [2, 4, OOV, OOV]


def test_min_count_sends_rare_values_to_oov():
    spec = FeatureSpec((Field("item_id"),))
    encoder = FeatureEncoder.fit(_frame(item_id=["x", "x", "y", "z", "z", "z"]), spec, min_count=2)
    assert encoder.vocabs["item_id"] == ["x", "z"]
    assert encoder.transform(_frame(item_id=["x", "y", "z"]))["item_id"].tolist() == [2, OOV, 3]


def test_integral_floats_and_ints_share_tokens():
    spec = FeatureSpec((Field("occupation"),))
    encoder = FeatureEncoder.fit(pd.DataFrame({"occupation": [1, 2, 2]}), spec)
    as_float = encoder.transform(pd.DataFrame({"occupation": [1.0, 2.0, np.nan]}))["occupation"]
    assert as_float.tolist() == [2, 3, OOV]


def test_multi_valued_padding_truncation_and_unknown_tokens():
    spec = FeatureSpec((Field("genres", "multi", max_len=2),))
    encoder = FeatureEncoder.fit(_frame(genres=["Action|Drama", "Drama", "Comedy|Action|Drama"]), spec)
    assert encoder.vocabs["genres"] == ["Action", "Comedy", "Drama"]
    out = encoder.transform(_frame(genres=["Drama", "Comedy|Action|Drama", "Western|Drama", None, ""]))["genres"]
    assert out.shape == (5, 2)
    assert out.tolist() == [[4, PAD], [3, 2], [OOV, 4], [OOV, PAD], [OOV, PAD]]


def test_multi_valued_max_len_defaults_to_longest_training_row():
    encoder = FeatureEncoder.fit(_frame(genres=["a|b|c", "a"]), FeatureSpec((Field("genres", "multi"),)))
    assert encoder.max_lens == {"genres": 3}


def test_numeric_fields_are_bucketized_on_training_quantiles():
    spec = FeatureSpec((Field("age", "numeric", n_bins=4),))
    encoder = FeatureEncoder.fit(pd.DataFrame({"age": np.arange(1, 101)}), spec)
    assert encoder.edges["age"] == pytest.approx([25.75, 50.5, 75.25])
    assert encoder.vocab_sizes["age"] == 2 + 4
    out = encoder.transform(pd.DataFrame({"age": [-5, 10, 50.5, 60, 1000, np.nan]}))["age"]
    assert out.tolist() == [2, 2, 4, 4, 5, OOV]


def test_transform_survives_missing_columns_and_adds_label():
    frame = make_interactions(n_rows=200)
    encoder = FeatureEncoder.fit(frame, default_spec(frame.columns))
    arrays = encoder.transform(frame.drop(columns=["zip", "genres"]))
    assert (arrays["zip"] == OOV).all()
    assert (arrays["genres"][:, 0] == OOV).all() and (arrays["genres"][:, 1:] == PAD).all()
    assert arrays["label"].dtype == np.float32 and arrays["label"].tolist() == frame["label"].tolist()
    for name, size in encoder.vocab_sizes.items():
        assert arrays[name].min() >= 0 and arrays[name].max() < size


def test_fit_names_missing_columns():
    with pytest.raises(DataError, match="zip"):
        FeatureEncoder.fit(_frame(user_id=["1"]), FeatureSpec((Field("user_id"), Field("zip"))))


def test_save_load_round_trip_is_plain_json(tmp_path):
    frame = make_interactions(n_rows=300)
    encoder = FeatureEncoder.fit(frame.iloc[:200], default_spec(frame.columns), min_count=2)
    path = encoder.save(tmp_path)
    assert json.loads(path.read_text())["min_count"] == 2
    loaded = FeatureEncoder.load(tmp_path)
    assert loaded.vocab_sizes == encoder.vocab_sizes
    before, after = encoder.transform(frame), loaded.transform(frame)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_load_reports_missing_or_broken_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        FeatureEncoder.load(tmp_path)
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(DataError, match="not a valid"):
        FeatureEncoder.load(tmp_path)
