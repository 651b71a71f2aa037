"""The text stage: ClickPrompt's "<field name> is <value>." sentences, exactly, per split, label excluded."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from assets import text
from assets.prompts import load_config
from assets.split import split_table
from assets.tables import read_table
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from tests.fixtures_params import project_params
from tests.fixtures_tables import write_split_files

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "prompts.yaml"


def params(dataset: str = "ml-100k", config: Path = CONFIG) -> Params:
    return project_params({"data.name": dataset, "prompts.config": str(config), "prompts.recent_n": 5})


def test_movielens_sentence_per_field_exact(interactions):
    row = interactions.iloc[[0]].copy()
    row[["user_id", "gender", "age", "occupation", "zip"]] = ["196", "M", 49, "writer", "55105"]
    row[["item_id", "title", "genres", "year"]] = ["242", "Kolya", "Comedy|Drama", 1996]
    assert text.textualize(row, load_config(params(), ROOT)).iloc[0] == (
        "User ID is 196. Gender is male. Age is 49. Occupation is writer. Zipcode is 55105. "
        "Movie ID is 242. Title is Kolya. Genre is Comedy, Drama. Year is 1996."
    )


def test_missing_values_and_ml1m_age_codes(interactions):
    rows = interactions.iloc[:2].copy()
    rows["year"] = pd.array([pd.NA, 1995], dtype="Int64")
    rows["occupation"] = pd.array(["", "writer"], dtype="string")
    rows["age"] = pd.array([1, 56], dtype="Int64")
    ml1m = text.textualize(rows, load_config(params("ml-1m"), ROOT))
    assert "Year is unknown." in ml1m.iloc[0] and "Occupation is unknown." in ml1m.iloc[0]
    assert "Age is under 18." in ml1m.iloc[0] and "Age is 56 or older." in ml1m.iloc[1]
    assert "Age is 1." in text.textualize(rows, load_config(params(), ROOT)).iloc[0]  # ml-100k ages are years


def test_stage_writes_each_split_aligned_without_label(interactions, tmp_path):
    splits = split_table(interactions, "random", [0.8, 0.1, 0.1], seed=1)
    write_split_files(tmp_path, splits)
    meta = text.run(params(), tmp_path)
    assert meta["fields"] == ["User ID", "Gender", "Age", "Occupation", "Zipcode", "Movie ID", "Title", "Genre", "Year"]
    for name, df in splits.items():
        out = read_table(tmp_path / "artifacts" / "text" / "ml-100k" / f"{name}.parquet")
        assert meta[f"{name}_rows"] == len(df) == len(out)
        assert out.columns.tolist() == ["user_id", "item_id", "scenario", "label", "text"]
        assert out[["user_id", "item_id", "label"]].equals(df[["user_id", "item_id", "label"]])
        first = out.iloc[0]
        assert first["text"].startswith(f"User ID is {first['user_id']}. ")
        assert out["text"].str.count(r"\. ").eq(8).all()  # 9 sentences, no rating or label among them
        assert not out["text"].str.contains("rating|label", case=False).any()


def test_bad_config_and_missing_split_are_named(interactions, tmp_path):
    tree = yaml.safe_load(CONFIG.read_text())
    tree["ml-100k"] = {
        **tree["ml-100k"],
        "text": {**tree["ml-100k"]["text"], "fields": {"user_id": "User", "mood": "Mood"}},
    }
    bad = tmp_path / "prompts.yaml"
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ParamsError, match=r"text.fields names column\(s\) mood"):
        text.textualize(interactions, load_config(params(config=bad), ROOT))
    with pytest.raises(ParamsError, match="prompts.config points to .*missing.yaml"):
        load_config(params(config=tmp_path / "missing.yaml"), ROOT)
    with pytest.raises(DataError, match="train.parquet: not found"):
        text.run(params(), tmp_path)
    assert not (tmp_path / "artifacts" / "text").exists()
