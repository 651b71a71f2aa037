"""What an asset page shows for a stage's figures: tables with Dagster's standard row count and column
schema, file links, URLs, numbers for the Plots tab; two keys that would show under one name fail."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.tables import preview_table
from orchestration.metadata import to_metadata


def test_each_suffix_shows_as_its_kind(tmp_path: Path):
    frame = pd.DataFrame({"user_id": ["1", "2", None], "label": [1, 0, 1], "score": [0.5, float("nan"), 0.25]})
    shown = to_metadata(
        {
            "preview_table": preview_table(frame, rows=2),
            "report_path": "artifacts/drift/ml-100k/overall.html",
            "ui_url": "http://127.0.0.1:8000/projects/x",
            "auc": 0.75,
            "rows": 3,
            "per_scenario": {"a": 1},
            "seed": None,
        },
        tmp_path,
    )
    table = shown["preview"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [r.data for r in table.records] == [
        {"user_id": "1", "label": 1, "score": 0.5},
        {"user_id": "2", "label": 0, "score": None},  # NaN: no value
    ]
    assert shown["dagster/row_count"].value == 3  # the whole table, not the preview
    assert [(c.name, c.type) for c in shown["dagster/column_schema"].schema.columns] == [
        ("user_id", "object"),
        ("label", "int64"),
        ("score", "float64"),
    ]
    assert shown["report"].path == str(tmp_path.resolve() / "artifacts/drift/ml-100k/overall.html")
    assert shown["ui"].url == "http://127.0.0.1:8000/projects/x"
    assert shown["auc"] == 0.75 and shown["rows"] == 3  # numbers: Dagster infers them, the Plots tab draws them
    assert shown["per_scenario"].data == {"a": 1} and shown["seed"].text == "-"


def test_two_keys_showing_under_one_name_fail(tmp_path: Path):
    with pytest.raises(ValueError, match="'results_md' and 'results_table' both show as 'results'"):
        to_metadata({"results_md": "| a |", "results_table": preview_table(pd.DataFrame({"a": [1]}))}, tmp_path)
