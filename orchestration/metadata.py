"""A stage's figures as Dagster metadata: what a person reads on an asset's page.

A stage's ``run`` returns a flat dict; each key's suffix says how its value is shown (the suffix is
dropped from the name Dagster shows):

* ``*_md``: markdown;
* ``*_png``: a PNG file (relative to the project root) drawn inline;
* ``*_table``: a table preview (``assets.tables.preview_table``: records, column schema, row count);
  the asset's own ``preview_table`` also sets Dagster's standard ``dagster/row_count`` and
  ``dagster/column_schema``, which the catalog and the asset's overview show;
* ``*_path``: a file (relative to the root, or absolute), shown as its absolute path;
* ``*_url``: a link;
* int/float: a number, which the asset's Plots tab draws over its materializations;
* dict/list: JSON; None: ``-``.

The kinds are Dagster Pipes' metadata kinds, so the rank-0 process of a distributed stage reports
the very same metadata through Pipes (orchestration/cli.py).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

PREVIEW = "preview_table"  # the table an asset's standard row count and column schema describe


def metadata_kinds(values: dict[str, Any], root: Path) -> dict[str, tuple[str, Any]]:
    """Stage metadata -> {shown name: (Pipes metadata kind, raw value)}; ValueError when two keys would
    show under one name (``results_md`` and ``results_table``)."""
    out: dict[str, tuple[str, Any]] = {}
    source: dict[str, str] = {}
    for key, value in values.items():
        for name, shown in _shown(key, value, root):
            if name in out:
                raise ValueError(f"stage metadata keys {source[name]!r} and {key!r} both show as {name!r}")
            out[name], source[name] = shown, key
    return out


def _shown(key: str, value: Any, root: Path) -> list[tuple[str, tuple[str, Any]]]:
    """The (name, (kind, value)) entries one stage metadata item shows as."""
    if key.endswith("_png"):
        data = base64.b64encode((Path(root) / value).read_bytes()).decode()
        return [(key[:-4], ("md", f"![{key[:-4]}](data:image/png;base64,{data})\n\n`{value}`"))]
    if key.endswith("_md"):
        return [(key[:-3], ("md", value))]
    if key.endswith("_table"):
        table = [(key[:-6], ("table", {"records": value["records"], "schema": value["schema"]}))]
        if key == PREVIEW:
            table.append(("dagster/row_count", ("int", int(value["row_count"]))))
            table.append(("dagster/column_schema", ("table_schema", {"columns": value["schema"]})))
        return table
    if key.endswith("_path"):
        return [(key[:-5], ("path", str((Path(root) / value).resolve())))]
    if key.endswith("_url"):
        return [(key[:-4], ("url", value))]
    if isinstance(value, (dict, list)):
        return [(key, ("json", value))]
    return [(key, ("text", "-") if value is None else ("__infer__", value))]


def to_metadata(values: dict[str, Any], root: Path) -> dict[str, Any]:
    """Stage metadata -> Dagster metadata values (see :func:`metadata_kinds`)."""
    return {key: _value(kind, value) for key, (kind, value) in metadata_kinds(values, root).items()}


def _value(kind: str, value: Any) -> Any:
    import dagster as dg

    if kind == "table":
        return dg.MetadataValue.table(
            records=[dg.TableRecord(record) for record in value["records"]], schema=_schema(value["schema"])
        )
    if kind == "table_schema":
        return dg.MetadataValue.table_schema(_schema(value["columns"]))
    make = {
        "md": dg.MetadataValue.md,
        "json": dg.MetadataValue.json,
        "text": dg.MetadataValue.text,
        "path": dg.MetadataValue.path,
        "url": dg.MetadataValue.url,
        "int": dg.MetadataValue.int,
    }
    return make[kind](value) if kind in make else value


def _schema(columns: list[dict[str, str]]):
    import dagster as dg

    return dg.TableSchema(columns=[dg.TableColumn(name=c["name"], type=c["type"]) for c in columns])
