"""Reading, writing and describing interaction tables: the file format shared by every stage.

Parquet written by pyarrow with fixed options, so the same frame always gives the same bytes
(the split stage promises byte-identical files for the same params).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from llm4ctr.atomic import write_text
from llm4ctr.errors import DataError


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` as parquet (zstd, no index) deterministically."""
    df.to_parquet(path, engine="pyarrow", index=False, compression="zstd")


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a parquet table written by a stage (only ``columns`` when given); a missing file names the
    stage to run first."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that produces it first (e.g. `dvc repro`)")
    return pd.read_parquet(path, engine="pyarrow", columns=columns)


def write_json(obj: Any, path: Path) -> None:
    """Atomically write ``obj`` as pretty, key-sorted JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that produces it first (e.g. `dvc repro`)")
    return json.loads(path.read_text(encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    """numpy scalars and other oddities -> plain Python for json.dumps."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def describe(df: pd.DataFrame) -> dict[str, Any]:
    """The figures a person wants to see for an interactions table."""
    return {
        "rows": int(len(df)),
        "users": int(df["user_id"].nunique()),
        "items": int(df["item_id"].nunique()),
        "positive_rate": round(float(df["label"].mean()), 4) if len(df) else 0.0,
        "per_scenario": {str(k): int(v) for k, v in df["scenario"].value_counts().sort_index().items()},
    }


def preview_table(df: pd.DataFrame, rows: int = 10) -> dict[str, Any]:
    """The first ``rows`` rows with the column schema and the full row count: what Dagster shows as a
    table (orchestration/metadata.py), values as plain JSON scalars (missing values as null)."""
    head = df.head(rows)
    records = [
        {str(k): _scalar(v) for k, v in record.items()} for record in head.to_dict(orient="records")
    ]  # fmt: skip
    schema = [{"name": str(name), "type": str(dtype)} for name, dtype in df.dtypes.items()]
    return {"records": records, "schema": schema, "row_count": int(len(df))}


def _scalar(value: Any) -> Any:
    """A cell as str/int/float/bool/None (what a Dagster table record holds)."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):
        value = value.item()
    return value if isinstance(value, (str, int, float, bool)) else str(value)
