"""Stage `ingest`: raw files of one dataset -> the normalized interactions table, validated by GX.

Reads data/<dataset>/ (obtained by `llm4ctr fetch`; its files are first checked against the fetch
record, see assets/datasets/integrity.py), writes artifacts/ingest/<dataset>/: interactions.parquet,
summary.json, gx_result.json. Each validation, by the stage (GX run name ``ingest``) or by its Dagster
check (``ingest-check``), is also recorded in the dataset's GX project artifacts/gx/<dataset>/ and its
Data Docs site. A refused raw file or a failing suite (whose full result goes to artifacts/failures/)
leaves the previous good output untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assets.tables import describe, preview_table, read_table, write_json, write_table
from llm4ctr.atomic import atomic_dir
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir, failure_path, gx_dir, raw_dir

STAGE = "ingest"
CHECK = f"{STAGE}-check"  # the GX run name of the Dagster check's validations
TABLE = "interactions.parquet"


def run(params: Params, root: Path) -> dict[str, Any]:
    """Load, validate and write the interactions table; return its description as metadata."""
    from assets.datasets import load_interactions
    from assets.validation import enforce, validate_raw

    dataset = params.get_path("data.name")
    table = load_interactions(dataset, raw_dir(root, dataset), params)
    report = validate_raw(table, dataset, gx_dir(root, dataset), STAGE)
    with atomic_dir(artifact_dir(root, STAGE, dataset)) as tmp:
        enforce(report, tmp / "gx_result.json" if report.success else failure_path(root, STAGE, dataset))
        write_table(table, tmp / TABLE)
        summary = {"dataset": dataset, **describe(table)}
        write_json(summary, tmp / "summary.json")
    return {**summary, **report.docs_metadata(root), "preview_table": preview_table(table)}


def check(params: Params, root: Path):
    """Re-run the raw suite on the written table (Dagster's blocking asset check), recorded in the Data Docs."""
    from assets.validation import validate_raw

    dataset = params.get_path("data.name")
    return validate_raw(read_table(artifact_dir(root, STAGE, dataset) / TABLE), dataset, gx_dir(root, dataset), CHECK)
