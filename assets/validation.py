"""Great Expectations suites for the normalized interactions table and its train/valid/test split.

Every rule is a GX expectation, so the full JSON result is the record of what was checked. Rules
that span several tables (split shares, key overlap, chronological order) are expectations over
small derived frames built here, one row per thing that can go wrong (a split, a key, a user).

Validations run through a file-backed GX project per dataset (artifacts/gx/<dataset>/, see
:func:`llm4ctr.paths.gx_dir`): each table is a Checkpoint whose UpdateDataDocsAction adds the run's
page to the project's Data Docs site, so every validation, passed or failed, from a stage or from its
Dagster check, stays browsable there (its index lists the newest :data:`DOCS_INDEX_LIMIT` table validations).
Great Expectations is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from assets.schema import DATASET_FEATURES, KEY_COLUMNS, columns_for
from llm4ctr.atomic import write_text
from llm4ctr.errors import DataError, ParamsError, ValidationFailed
from llm4ctr.paths import portable

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.data_context import FileDataContext

SPLITS = ("train", "valid", "test")
SPLIT_METHODS = ("random", "global_time", "user_time", "cold_item", "cold_user")
COLD_KEYS = {"cold_item": "item_id", "cold_user": "user_id"}  # cold methods: the key whose values train never sees
KEY = ["user_id", "item_id", "timestamp"]  # one interaction; unique within and across splits
NOT_NULL = ["user_id", "item_id", "label", "timestamp", "scenario"]
EXAMPLES = 5  # offending values quoted per failed expectation
SOURCE = "llm4ctr"  # the GX project's pandas data source; one dataframe asset per table
SITE = "local_site"  # the GX project's Data Docs site
SITE_DIR = f"uncommitted/data_docs/{SITE}"  # where its HTML lies in the project folder (GX's default)
DOCS_INDEX_LIMIT = 200  # validation results listed on the Data Docs index (the newest), which bounds its rebuild
SITE_CONFIG = {
    "class_name": "SiteBuilder",
    "show_how_to_buttons": False,
    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": f"{SITE_DIR}/"},
    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": DOCS_INDEX_LIMIT},
}

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
    """The outcome of one or more suites: ``results``, ``statistics`` and ``pages`` (each table's Data
    Docs page of this run) are keyed by table name; ``data_docs`` is the GX project's Data Docs index."""

    success: bool
    summary: str
    data_docs: Path
    results: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    pages: dict[str, Path] = field(default_factory=dict)

    def failed_pages(self) -> list[Path]:
        """The Data Docs pages of the tables that failed."""
        return [self.pages[table] for table, result in self.results.items() if not result["success"]]

    def docs_metadata(self, root: Path) -> dict[str, Any]:
        """Stage and check metadata: ``data_docs_path`` (the index) and ``data_docs_pages`` (table -> this
        run's page), relative to the project ``root``."""
        return {
            "data_docs_path": portable(self.data_docs, root),
            "data_docs_pages": {table: portable(page, root) for table, page in self.pages.items()},
        }


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


def validate_raw(df: pd.DataFrame, dataset: str, project: Path, run: str) -> ValidationReport:
    """Validate one normalized table of ``dataset`` against :func:`raw_suite`, recorded as run ``run``
    (the stage or check) in the GX project folder ``project``."""
    runner = _Runner(project, run)
    runner.validate(f"raw '{dataset}'", df, raw_suite(dataset))
    return runner.report()


def validate_split(
    splits: Mapping[str, pd.DataFrame],
    dataset: str,
    method: str,
    project: Path,
    run: str,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    tolerance: float = 0.005,
) -> ValidationReport:
    """Validate a train/valid/test split: each part against :func:`raw_suite`, plus the cross-split
    rules: shares within ``tolerance`` of ``ratios``, no interaction key in two splits, for the
    time-based ``method``s chronological order (globally, or per user), and for the cold ``method``s
    no item (user) in two splits: validation and test items (users) never occur in train. Recorded as
    run ``run`` in the GX project folder ``project``."""
    if method not in SPLIT_METHODS:
        raise ParamsError(f"split.method: unknown method '{method}', expected one of {list(SPLIT_METHODS)}")
    if len(ratios) != len(SPLITS):
        raise ParamsError(f"split.ratios: expected {len(SPLITS)} values (train, valid, test), got {list(ratios)}")
    missing = [name for name in SPLITS if name not in splits]
    if missing:
        raise DataError(f"split is missing part(s) {missing}; expected {list(SPLITS)}")
    runner = _Runner(project, run)
    suite = raw_suite(dataset)
    for name in SPLITS:
        runner.validate(f"split '{name}'", splits[name], suite)
    runner.validate("split shares", _shares_frame(splits, ratios), _shares_suite(tolerance), ["split"])
    if not all(_has_key_columns(splits[name]) for name in SPLITS):
        return runner.report()  # the per-split schema expectations have failed and say why
    runner.validate("split overlap", _keys_frame(splits), _overlap_suite(), ["split"])
    if method in ("global_time", "user_time"):
        frame = _order_frame(splits, per_user=method == "user_time")
        runner.validate(f"split order ({method})", frame, _order_suite(), ["scope", "split"])
    if method in COLD_KEYS:
        key = COLD_KEYS[method]
        runner.validate(f"split cold {key}", _cold_frame(splits, key), _cold_suite(key), [key, "split"])
    return runner.report()


def enforce(report: ValidationReport, result_path: str | Path) -> None:
    """Write the full report as JSON to ``result_path`` (atomically, pass or fail); raise
    :class:`ValidationFailed` with the summary, the JSON's path and the failed tables' Data Docs pages
    when it failed, so a bad table stops the pipeline."""
    payload = {
        "success": report.success,
        "summary": report.summary,
        "statistics": report.statistics,
        "results": report.results,
    }
    write_text(result_path, json.dumps(payload, indent=2, default=str) + "\n")
    if not report.success:
        raise ValidationFailed(report.summary, str(result_path), [str(page) for page in report.failed_pages()])


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
def _context(project: Path) -> FileDataContext:
    """The file-backed GX project in the folder ``project`` (an absolute path; scaffolded on first use)
    with analytics and progress bars off, the Data Docs site configured and the pandas data source.
    Cached per folder: two datasets, or tests in temporary roots, each keep their own project."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", context_root_dir=project)
    context.variables.analytics_enabled = False
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.variables.data_docs_sites = {SITE: SITE_CONFIG}
    context.variables.save()
    if SOURCE not in context.data_sources.all():
        context.data_sources.add_pandas(SOURCE)
    return context


def _checkpoint(
    context: FileDataContext, name: str, suite: gx.ExpectationSuite, index_columns: Sequence[str]
) -> gx.Checkpoint:
    """The Checkpoint ``name`` of ``context`` (added, or updated to the current ``suite``): ``suite`` on the
    whole dataframe of the asset ``name``, SUMMARY results quoting failing rows by ``index_columns`` (by
    position when empty), then the Data Docs site updated with the run's page."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    source = context.data_sources.get(SOURCE)
    if name in source.get_asset_names():
        whole = source.get_asset(name).get_batch_definition("whole")
    else:
        whole = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
    definition = gx.ValidationDefinition(name=name, data=whole, suite=context.suites.add_or_update(suite))
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}
    if index_columns:
        result_format["unexpected_index_column_names"] = list(index_columns)
    checkpoint = gx.Checkpoint(
        name=name,
        validation_definitions=[context.validation_definitions.add_or_update(definition)],
        actions=[UpdateDataDocsAction(name="data_docs", site_names=[SITE])],
        result_format=result_format,
    )
    return context.checkpoints.add_or_update(checkpoint)


class _Runner:
    """Validates tables as one GX run (one name, one start time) of the project in ``project``, so the
    Data Docs index lists them together; collects each table's result and Data Docs page."""

    def __init__(self, project: Path, run: str):
        from great_expectations.core.run_identifier import RunIdentifier

        self.context = _context(Path(project).resolve())
        self.run_id = RunIdentifier(run_name=run, run_time=dt.datetime.now(dt.UTC))
        self.results: dict[str, dict] = {}
        self.pages: dict[str, Path] = {}

    def validate(self, table: str, frame: pd.DataFrame, suite: gx.ExpectationSuite, index_columns=()) -> None:
        """Validate ``frame`` against ``suite`` as ``table``. ``index_columns`` name the rows quoted for
        failures (e.g. the split) instead of their positions."""
        name = re.sub(r"[^0-9a-z]+", "-", table.lower()).strip("-")  # checkpoint, asset and page names
        checkpoint = _checkpoint(self.context, name, suite, index_columns)
        outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=self.run_id)
        ((key, result),) = outcome.run_results.items()
        self.results[table] = result.to_json_dict()
        [site] = self.context.get_docs_sites_urls(resource_identifier=key, site_name=SITE, only_if_exists=False)
        self.pages[table] = Path(urllib.parse.unquote(site["site_url"].removeprefix("file://")))

    def report(self) -> ValidationReport:
        """Combine the tables' results into one report with a one-line-per-failure summary."""
        results = self.results
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
        return ValidationReport(
            success=not failures,
            summary=summary,
            data_docs=Path(self.context.root_directory) / SITE_DIR / "index.html",
            results=results,
            statistics={table: result["statistics"] for table, result in results.items()},
            pages=self.pages,
        )


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
