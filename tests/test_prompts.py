"""The prompts stage: exact LLM4MSR scenario/user prompts and LEARN item texts from configs/prompts.yaml,
histories from the training split only, and config errors that name the file and the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from assets import prompts
from assets.schema import columns_for
from assets.tables import read_table
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params
from tests.fixtures_params import project_params
from tests.fixtures_tables import write_split_files

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "prompts.yaml"
TITLES = {
    "10": "Alpha",
    "11": "Beta",
    "12": "Gamma",
    "13": "Delta",
    "14": "Epsilon",
    "20": "Leaky Valid",
    "21": "Leaky Test",
}


def params(dataset: str = "ml-100k", recent_n: int = 2, config: Path = CONFIG) -> Params:
    return project_params({"data.name": dataset, "prompts.config": str(config), "prompts.recent_n": recent_n})


def frame(rows: list[tuple]) -> pd.DataFrame:
    """Normalized ml-100k rows from (user, item, label, timestamp, scenario)."""
    records = [
        {
            "user_id": u, "item_id": i, "rating": 4.0 if y else 2.0, "label": y, "timestamp": t, "scenario": s,
            "gender": "F", "age": 20, "occupation": "student", "zip": "10001", "title": TITLES[i],
            "genres": "Comedy|Drama" if int(i) % 2 else "Action", "year": 1990 + int(i) % 10,
        }
        for u, i, y, t, s in rows
    ]  # fmt: skip
    dtypes = columns_for("ml-100k")
    return pd.DataFrame(records)[list(dtypes)].astype(dtypes)


@pytest.fixture
def splits() -> dict[str, pd.DataFrame]:
    train = frame(
        [
            ("1", "10", 1, 100, "age<25"),
            ("1", "11", 1, 200, "age<25"),
            ("1", "13", 0, 250, "age<25"),  # a negative: never in a prompt
            ("1", "12", 1, 300, "age<25"),
            ("1", "14", 1, 350, "age25-34"),
            ("2", "10", 1, 50, "age>=35"),
        ]
    )
    valid = frame([("1", "20", 1, 400, "age<25")])
    test = frame([("3", "21", 1, 500, "age>=35")])  # user 3 is only in test
    return {"train": train, "valid": valid, "test": test}


def test_user_prompt_exact_recent_positive_training_history(splits):
    config = prompts.load_config(params(), ROOT)
    users = prompts.build(splits, config, recent_n=3)["user"]
    assert users["user_id"].tolist() == ["1", "2", "3"]
    assert users.loc[0, "text"] == (
        "Here are the movies a user liked, oldest first. "
        'In scenario "age25-34" the user liked: Epsilon (Action). '
        'In scenario "age<25" the user liked: Beta (Comedy, Drama); Gamma (Action). '
        "Summarise the interests this user shares across all scenarios and the interests specific to each scenario."
    )
    assert users.loc[2, "text"] == (
        "Here are the movies a user liked, oldest first. The user has no liked movies on record yet. "
        "Summarise the interests this user shares across all scenarios and the interests specific to each scenario."
    )
    assert users[["n_liked", "n_shown"]].values.tolist() == [[4, 3], [1, 1], [0, 0]]


def test_no_valid_or_test_interaction_leaks_into_user_prompts(splits):
    config = prompts.load_config(params(), ROOT)
    tables = prompts.build(splits, config, recent_n=50)
    text = " ".join(tables["user"]["text"])
    assert "Leaky" not in text and "Delta" not in text  # valid/test positives and train negatives
    assert "Alpha" in text  # a training positive with a large recent_n
    stats = tables["scenario"].set_index("scenario")
    assert stats.loc["age<25", "interactions"] == 4  # statistics count training rows only


def test_scenario_prompt_exact(splits):
    config = prompts.load_config(params(), ROOT)
    scenarios = prompts.build(splits, config, recent_n=2)["scenario"]
    assert scenarios["scenario"].tolist() == ["age25-34", "age<25", "age>=35"]
    row = scenarios.set_index("scenario").loc["age<25"]
    assert (row["interactions"], row["users"], row["items"], row["positive_rate"]) == (4, 1, 4, 0.75)
    assert row["sparsity"] == 0.0
    overview = (
        'Scenario "age25-34": Users aged 25 to 34, mostly young professionals. It has 1 interactions from 1 users '
        'on 1 movies (sparsity 0.0000, positive rate 1.000). Scenario "age<25": Users younger than 25, mostly '
        "students. It has 4 interactions from 1 users on 4 movies (sparsity 0.0000, positive rate 0.750). "
        'Scenario "age>=35": Users aged 35 or older. It has 1 interactions from 1 users on 1 movies '
        "(sparsity 0.0000, positive rate 1.000)."
    )
    assert row["text"] == (
        f"A movie recommender serves 3 scenarios. {overview} "
        'Expert knowledge about scenario "age<25": Young viewers rate many recent releases and favour action, '
        "comedy, sci-fi and horror; their tastes change quickly and they are less predictable. "
        'What does scenario "age<25" share with the other scenarios, and how do its users, movies and '
        "feedback differ from theirs?"
    )


def test_unknown_scenario_uses_the_default_description():
    config = prompts.load_config(params(), ROOT)
    train = frame(
        [("1", "10", 1, 1, "age-unknown"), ("2", "11", 0, 2, "age-unknown"), ("2", "12", 1, 3, "age-unknown")]
    )
    (text,) = prompts.scenario_prompts(train, ["age-unknown"], config)["text"]
    assert (
        'Scenario "age-unknown": Users of the group "age-unknown". It has 3 interactions from 2 users on 3 movies'
        in text
    )
    assert "sparsity 0.5000, positive rate 0.667" in text
    assert "No expert knowledge is recorded for this scenario." in text


def test_item_text_exact_and_missing_fields_left_out(splits):
    config = prompts.load_config(params(), ROOT)
    items = prompts.build(splits, config, recent_n=2)["item"].set_index("item_id")
    assert items.loc["11", "text"] == "Title: Beta Genre: Comedy, Drama Year: 1991"
    assert len(items) == 7  # every item of every split
    partial = frame([("1", "10", 1, 1, "a")]).astype({"year": "Int64"})
    partial.loc[0, "year"] = pd.NA
    assert prompts.field_texts(partial, config, "item", "item_id")["text"].tolist() == ["Title: Alpha Genre: Action"]


def test_stage_writes_tables_and_template_ids(splits, tmp_path):
    write_split_files(tmp_path, splits)
    meta = prompts.run(params(recent_n=3), tmp_path)
    out = tmp_path / "artifacts" / "prompts" / "ml-100k"
    assert (meta["user_count"], meta["scenario_count"], meta["item_count"]) == (3, 3, 7)
    assert meta["users_without_history"] == 1
    assert read_table(out / "user.parquet").columns.tolist() == ["user_id", "text", "n_liked", "n_shown"]
    templates = json.loads((out / "templates.json").read_text())
    assert templates["user"]["id"] == "llm4msr-user-v1" and templates["item"]["id"] == "learn-item-v1"
    assert prompts.run(params(recent_n=4), tmp_path)["templates"]["user"]["hash"] != templates["user"]["hash"]


def test_config_errors_name_the_file_and_entry(tmp_path, splits):
    tree = yaml.safe_load(CONFIG.read_text())
    tree["ml-100k"] = {**tree["ml-100k"], "user": {**tree["ml-100k"]["user"], "item": "{title} ({colour})"}}
    bad = tmp_path / "prompts.yaml"
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ParamsError, match=r"prompts.yaml \[ml-100k\]: user.item names column\(s\) colour"):
        prompts.build(splits, prompts.load_config(params(config=bad), ROOT), recent_n=2)
    with pytest.raises(ParamsError, match="no section for dataset 'kuaisar'"):
        prompts.load_config(params(dataset="kuaisar"), ROOT)
    with pytest.raises(ParamsError, match="prompts.recent_n must be a positive integer"):
        prompts.build(splits, prompts.load_config(params(), ROOT), recent_n=0)
    tree["ml-100k"]["scenario"] = {**tree["ml-100k"]["scenario"], "descriptions": {}}
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ParamsError, match="no 'description' and 'knowledge' for scenario 'age25-34'"):
        prompts.build(splits, prompts.load_config(params(config=bad), ROOT), recent_n=2)
