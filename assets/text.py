"""Stage `text`: every sample of every split as text, ClickPrompt's modality transformation.

One sentence per field, ``"<field name> is <value>."``, joined by spaces, label excluded, e.g.
"User ID is 196. Gender is male. Age is 49. ... Title is Kolya. Genre is Comedy. Year is 1996."
Field names, their order, the sentence pattern and value maps come from configs/prompts.yaml
(section ``text`` of the dataset); values are written by :func:`assets.prompts.format_column`.

Outputs in artifacts/text/<dataset>/: {train,valid,test}.parquet, row for row aligned with the
split files, columns user_id, item_id, scenario, label, text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from assets.prompts import formatted, load_config, render
from assets.split import load_splits
from assets.tables import write_table
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir

STAGE = "text"
KEEP = ["user_id", "item_id", "scenario", "label"]


def textualize(frame: pd.DataFrame, config: Params) -> pd.Series:
    """The ClickPrompt text of every row of ``frame`` (vectorised: one string concat per field)."""
    fields = config.get_path("text.fields")
    if not isinstance(fields, dict) or not fields:
        raise ParamsError(f"{config.source}: text.fields must map at least one column to its name, got {fields!r}")
    sentence, joiner = config.get_path("text.sentence"), config.get_path("text.joiner")
    words = formatted(frame, list(fields), config, "text.fields", config.get_path("missing"))
    parts = []
    for column, name in fields.items():
        # "{name} is {value}." -> the fixed text before and after the value, filled in for the column
        before, _, after = render(sentence, f"{config.source}: text.sentence", name=name, value="\0").partition("\0")
        parts.append(before + words[column] + after)
    text = parts[0]
    for part in parts[1:]:
        text = text + joiner + part
    return text.astype("string")


def run(params: Params, root: Path) -> dict[str, Any]:
    """Textualize the train/valid/test splits of ``data.name``."""
    dataset = params.get_path("data.name")
    config = load_config(params, root)
    splits = load_splits(root, dataset)
    texts = {name: df[KEEP].assign(text=textualize(df, config)) for name, df in splits.items()}
    with atomic_dir(artifact_dir(root, STAGE, dataset)) as tmp:
        for name, table in texts.items():
            write_table(table, tmp / f"{name}.parquet")
    fields = config.get_path("text.fields")
    missing = {c: int(splits["train"][c].isna().sum()) for c in fields if c in splits["train"]}
    meta: dict[str, Any] = {"dataset": dataset, "fields": list(fields.values()), "train_missing_values": missing}
    for name, table in texts.items():
        words = table["text"].str.count(" ") + 1
        meta[f"{name}_rows"] = int(len(table))
        meta[f"{name}_words_mean"] = round(float(words.mean()), 1) if len(table) else 0.0
        meta[f"{name}_words_max"] = int(words.max()) if len(table) else 0
    meta["example"] = texts["train"]["text"].iloc[0] if len(texts["train"]) else ""
    return meta
