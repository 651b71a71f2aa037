"""Great Expectations suites for the normalized interactions table and its train/valid/test split.

Every rule is a GX expectation, so the full JSON result is the record of what was checked. Rules
that span several tables (split shares, key overlap, chronological order) are expectations over
small derived frames built here, one row per thing that can go wrong (a split, a key, a user).

Great Expectations is imported lazily (about 4 s) and one ephemeral context is built per process,
so importing this module stays cheap (no GX) and validating a 100k-row table takes about a second.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from assets.schema import DATASET_FEATURES, KEY_COLUMNS, columns_for
from llm4ctr.atomic import write_text
from llm4ctr.errors import DataError, ParamsError, ValidationFailed

if TYPE_CHECKING:
    import great_expectations as gx

SPLITS = ("train", "valid", "test")
SPLIT_METHODS = ("random", "global_time", "user_time", "cold_item", "cold_user")
COLD_KEYS = {"cold_item": "item_id", "cold_user": "user_id"}  # cold methods: the key whose values train never sees
KEY = ["user_id", "item_id", "timestamp"]  # one interaction; unique within and across splits
NOT_NULL = ["user_id", "item_id", "label", "timestamp", "scenario"]
EXAMPLES = 5  # offending values quoted per failed expectation

AGE_GROUPS = ["age<25", "age25-34", "age>=35"]  # the MovieLens scenarios (age is required there)
# column -> allowed values; nulls are left to NOT_NULL (features may be missing).
# Amazon's scenarios are its configured categories, so they have no fixed set here.
VALUE_SETS: dict[str, dict[str, list]] = {
    "common": {"label": [0, 1]},
    "ml-100k": {"gender": ["M", "F"], "scenario": AGE_GROUPS},
    "ml-1m": {"gender": ["M", "F"], "scenario": AGE_GROUPS},
    "bookcrossing": {"scenario": [*AGE_GROUPS, "age-unknown"]},
}
# column -> (min, max), both inclusive, None for open. BookCrossing's publication years stay
# unchecked: the dump holds years such as 1378 and 2050 that the loader keeps.
RANGES: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "common": {"timestamp": (0, None)},
    "ml-100k": {"rating": (1, 5), "age": (1, 100), "year": (1900, 2030)},
    "ml-1m": {"rating": (1, 5), "age": (1, 100), "year": (1900, 2030)},
    "bookcrossing": {"rating": (1, 10), "age": (1, 100)},
    "amazon": {"rating": (1, 5)},
}


@dataclass
class ValidationReport:
    """The outcome of one or more suites: ``results`` and ``statistics`` are keyed by table name."""

    success: bool
    summary: str
    results: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)


def raw_suite(dataset: str) -> gx.ExpectationSuite:
    """The suite every normalized table of ``dataset`` (the raw table and each split) must pass."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    if dataset not in DATASET_FEATURES:
        raise ParamsError(f"data.name: unknown dataset '{dataset}', expected one of {sorted(DATASET_FEATURES)}")
    columns = columns_for(dataset)
    value_sets = {**VALUE_SETS["common"], **VALUE_SETS.get(dataset, {})}
    ranges = {**RANGES["common"], **RANGES.get(dataset, {})}
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(columns)),
        *(gxe.ExpectColumnTypeToBe(column=c, type_=t) for c, t in columns.items()),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in NOT_NULL),
        *(gxe.ExpectColumnValuesToBeInSet(column=c, value_set=v) for c, v in value_sets.items()),
        *(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi) for c, (lo, hi) in ranges.items()),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=KEY),
    ]
    return gx.ExpectationSuite(name=f"raw-{dataset}", expectations=expectations)


def validate_raw(df: pd.DataFrame, dataset: str) -> ValidationReport:
    """Validate one normalized table of ``dataset`` against :func:`raw_suite`."""
    return _report({f"raw '{dataset}'": _run(df, raw_suite(dataset))})


def validate_split(
    splits: Mapping[str, pd.DataFrame],
    dataset: str,
    method: str,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    tolerance: float = 0.005,
) -> ValidationReport:
    """Validate a train/valid/test split: each part against :func:`raw_suite`, plus the cross-split
    rules: shares within ``tolerance`` of ``ratios``, no interaction key in two splits, for the
    time-based ``method``s chronological order (globally, or per user), and for the cold ``method``s
    no item (user) in two splits: validation and test items (users) never occur in train."""
    if method not in SPLIT_METHODS:
        raise ParamsError(f"split.method: unknown method '{method}', expected one of {list(SPLIT_METHODS)}")
    if len(ratios) != len(SPLITS):
        raise ParamsError(f"split.ratios: expected {len(SPLITS)} values (train, valid, test), got {list(ratios)}")
    missing = [name for name in SPLITS if name not in splits]
    if missing:
        raise DataError(f"split is missing part(s) {missing}; expected {list(SPLITS)}")
    suite = raw_suite(dataset)
    results = {f"split '{name}'": _run(splits[name], suite) for name in SPLITS}
    results["split shares"] = _run(_shares_frame(splits, ratios), _shares_suite(tolerance), ["split"])
    if not all(_has_key_columns(splits[name]) for name in SPLITS):
        return _report(results)  # the per-split schema expectations have failed and say why
    results["split overlap"] = _run(_keys_frame(splits), _overlap_suite(), ["split"])
    if method in ("global_time", "user_time"):
        frame = _order_frame(splits, per_user=method == "user_time")
        results[f"split order ({method})"] = _run(frame, _order_suite(), ["scope", "split"])
    if method in COLD_KEYS:
        key = COLD_KEYS[method]
        results[f"split cold {key}"] = _run(_cold_frame(splits, key), _cold_suite(key), [key, "split"])
    return _report(results)


def enforce(report: ValidationReport, result_path: str | Path) -> None:
    """Write the full report as JSON to ``result_path`` (atomically, pass or fail); raise
    :class:`ValidationFailed` with the summary when it failed, so a bad table stops the pipeline."""
    payload = {
        "success": report.success,
        "summary": report.summary,
        "statistics": report.statistics,
        "results": report.results,
    }
    write_text(result_path, json.dumps(payload, indent=2, default=str) + "\n")
    if not report.success:
        raise ValidationFailed(report.summary, str(result_path))


# --- cross-split suites over derived frames -------------------------------------------------------


def _has_key_columns(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` has the key columns with their schema dtypes, which the cross-split frames need."""
    return all(c in frame.columns and str(frame[c].dtype) == KEY_COLUMNS[c] for c in KEY)


def _shares_frame(splits: Mapping[str, pd.DataFrame], ratios: Sequence[float]) -> pd.DataFrame:
    """One row per split: its rows, share of all rows, target share and the deviation between them."""
    frame = pd.DataFrame({"split": SPLITS, "rows": [len(splits[name]) for name in SPLITS], "target": ratios})
    frame["share"] = frame["rows"] / max(int(frame["rows"].sum()), 1)
    # rounded so that a deviation of exactly the tolerance is not lost to float noise
    frame["deviation"] = (frame["share"] - frame["target"]).round(9)
    return frame


def _shares_suite(tolerance: float) -> gx.ExpectationSuite:
    """Each split's share lies within ``tolerance`` of its target."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    check = gxe.ExpectColumnValuesToBeBetween(column="deviation", min_value=-tolerance, max_value=tolerance)
    return gx.ExpectationSuite(name="split-shares", expectations=[check])


def _keys_frame(splits: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The distinct interaction keys of each split, stacked with the split's name. Duplicates within
    one split are the per-split suite's business, so here a repeated key means two splits share it."""
    parts = [splits[name][KEY].drop_duplicates().assign(split=name) for name in SPLITS]
    return pd.concat(parts, ignore_index=True)


def _overlap_suite() -> gx.ExpectationSuite:
    """No interaction key appears in two splits."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    check = gxe.ExpectCompoundColumnsToBeUnique(column_list=KEY)
    return gx.ExpectationSuite(name="split-overlap", expectations=[check])


def _cold_frame(splits: Mapping[str, pd.DataFrame], key: str) -> pd.DataFrame:
    """The distinct values of ``key`` in each split, stacked with the split's name: a value listed
    twice occurs in two splits."""
    return pd.concat([splits[name][[key]].drop_duplicates().assign(split=name) for name in SPLITS], ignore_index=True)


def _cold_suite(key: str) -> gx.ExpectationSuite:
    """Each item (user) belongs to one split: the held-out ones are cold."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(name=f"split-cold-{key}", expectations=[gxe.ExpectColumnValuesToBeUnique(column=key)])


def _order_frame(splits: Mapping[str, pd.DataFrame], per_user: bool) -> pd.DataFrame:
    """One row per scope (all rows, or one user) and split after its first: the split's earliest
    timestamp and the latest timestamp of the earlier splits in that scope. The order holds iff
    ``min_ts >= prev_max_ts`` on every row; a user seen in one split only has no row."""
    parts = [
        pd.DataFrame(
            {
                "scope": splits[name]["user_id"] if per_user else "all",
                "position": position,
                "split": name,
                "timestamp": splits[name]["timestamp"],
            }
        )
        for position, name in enumerate(SPLITS)
    ]
    stats = (
        pd.concat(parts, ignore_index=True)
        .groupby(["scope", "position", "split"], observed=True)["timestamp"]
        .agg(min_ts="min", max_ts="max")
        .reset_index()
        .sort_values(["scope", "position"])
    )
    previous = stats.groupby("scope", observed=True)["max_ts"].shift()
    stats["prev_max_ts"] = previous.groupby(stats["scope"], observed=True).cummax()
    stats = stats.dropna(subset=["prev_max_ts"]).astype({"prev_max_ts": "int64"})
    return stats[["scope", "split", "min_ts", "prev_max_ts"]].reset_index(drop=True)


def _order_suite() -> gx.ExpectationSuite:
    """Every split starts no earlier than all earlier splits end (within its scope)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    check = gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="min_ts", column_B="prev_max_ts", or_equal=True)
    return gx.ExpectationSuite(name="split-order", expectations=[check])


# --- running suites and reporting -----------------------------------------------------------------


@functools.cache
def _batch_definition():
    """A whole-dataframe batch definition on this process's one ephemeral GX context, progress bars
    off. Cached: a context is reused by every validation, and asset names must be unique in it."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("llm4ctr").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


def _run(frame: pd.DataFrame, suite: gx.ExpectationSuite, index_columns: Sequence[str] = ()) -> dict:
    """Validate ``frame`` against ``suite``; the JSON-ready result. ``index_columns`` name the rows
    quoted for failures (e.g. the split) instead of their positions."""
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}
    if index_columns:
        result_format["unexpected_index_column_names"] = list(index_columns)
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(suite, result_format=result_format).to_json_dict()


def _report(results: dict[str, dict]) -> ValidationReport:
    """Combine per-table results into one report with a one-line-per-failure summary."""
    failures = [
        f"- {table}: {_describe(outcome)}"
        for table, result in results.items()
        for outcome in result["results"]
        if not outcome["success"]
    ]
    total = sum(result["statistics"]["evaluated_expectations"] for result in results.values())
    tables = ", ".join(results)
    if failures:
        summary = "\n".join([f"{len(failures)} of {total} expectations failed ({tables}):", *failures])
    else:
        summary = f"all {total} expectations passed ({tables})"
    statistics = {table: result["statistics"] for table, result in results.items()}
    return ValidationReport(success=not failures, summary=summary, results=results, statistics=statistics)


def _describe(outcome: dict) -> str:
    """One failed expectation as text: the call with its arguments, then what went wrong."""
    config = outcome["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    columns = [_short(kwargs.pop(k)) for k in ("column", "column_A", "column_B", "column_list") if k in kwargs]
    arguments = columns + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return f"{config['type']}({', '.join(arguments)}) {_what_failed(outcome)}"


def _what_failed(outcome: dict) -> str:
    """The failure of one expectation: the error that stopped it, the offending rows, or what it saw."""
    error = _error_message(outcome.get("exception_info") or {})
    if error:
        return f"could not run: {error}"
    result = outcome["result"]
    if "unexpected_count" not in result:
        seen = result["details"] if "details" in result else result.get("observed_value")
        return f"failed: observed {_short(seen)}"
    text = f"failed on {result['unexpected_count']} of {result['element_count']} rows"
    where = result.get("partial_unexpected_index_list") or []
    if where and isinstance(where[0], dict):  # named rows (derived frames): they carry the values
        return f"{text}; examples: {_short(where)}"
    return f"{text}; examples: {_short(result.get('partial_unexpected_list', []))} at rows {_short(where)}"


def _error_message(info: dict) -> str | None:
    """The first exception message in a result's ``exception_info`` (flat, or keyed by metric)."""
    entries = [info] if "raised_exception" in info else list(info.values())
    raised = (e.get("exception_message") for e in entries if isinstance(e, dict) and e.get("raised_exception"))
    return next(raised, None)


def _short(value: Any, limit: int = 200) -> str:
    """``value`` as compact JSON, cut to ``limit`` characters so one line stays readable."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
