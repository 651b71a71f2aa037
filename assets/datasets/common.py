"""Helpers every raw-data loader shares: reading files with precise error messages, typed columns,
reference checks, the label rule and the final normalized frame.

Frames read here carry the 1-based line number of each row in their index, so any later problem
(a non-numeric rating, an empty id, an unknown user) can be reported as "file, line, value".
"""

from __future__ import annotations

import ast
import codecs
import csv
import gzip
import io
import json
import logging
import operator
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd

from assets.schema import SEPARATOR, columns_for
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params

log = logging.getLogger(__name__)

EXAMPLES = 3  # offending values quoted in an error message
MISSING_TOKENS = {"", "nan", "NaN", "NULL", "null", "None"}  # how raw files spell "no value"
SEP_NAMES = {"\t": "tab", ",": "comma", ";": "';'", "|": "'|'", "::": "'::'"}
LABEL_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq}
MISSING_REFERENCE_POLICIES = ("error", "drop")
# A layout: role -> acceptable file names (first preferred); a dataset may accept several layouts.
Layout = Mapping[str, Sequence[str]]
SORT_KEYS = ["timestamp", "user_id", "item_id"]


# ----------------------------------------------------------------------------------------------
# Finding the raw files
# ----------------------------------------------------------------------------------------------


def match_layout(present: Iterable[str], layouts: Mapping[str, Layout]) -> tuple[str, dict[str, str], list[str]]:
    """Pick the layout best covered by the file names ``present``.

    Returns (layout name, role -> chosen file name, names of the missing roles' preferred files).
    The layout with the most roles present wins; ties go to the first. Pure on names, so the loader
    (a directory) and fetch (an archive's members) share it.
    """
    present = set(present)
    best: tuple[str, dict[str, str], list[str]] | None = None
    for name, layout in layouts.items():
        chosen = {role: next((c for c in cands if c in present), None) for role, cands in layout.items()}
        found = {role: fname for role, fname in chosen.items() if fname is not None}
        missing = [layout[role][0] for role, fname in chosen.items() if fname is None]
        if best is None or len(found) > len(best[1]):
            best = (name, found, missing)
    assert best is not None, "a dataset declares at least one layout"
    return best


def describe_layouts(layouts: Mapping[str, Layout]) -> str:
    """'a, b, c (atomic) or d, e, f (original)': what a person should provide."""
    return " or ".join(
        f"{', '.join(cands[0] for cands in layout.values())} ({name})" for name, layout in layouts.items()
    )


def locate(raw_dir: Path, layouts: Mapping[str, Layout], dataset: str) -> tuple[str, dict[str, Path]]:
    """Resolve the raw files of ``dataset`` in ``raw_dir``; DataError names the missing file."""
    raw_dir = Path(raw_dir)
    present = [p.name for p in raw_dir.iterdir() if p.is_file()] if raw_dir.is_dir() else []
    name, found, missing = match_layout(present, layouts)
    if not found:
        raise DataError(
            f"{raw_dir}: no raw files of {dataset}; expected {describe_layouts(layouts)}"
            f" (run `llm4ctr fetch --dataset {dataset}`)"
        )
    if missing:
        raise DataError(
            f"{raw_dir / missing[0]}: file not found (the {name} layout of {dataset} needs "
            f"{', '.join(c[0] for c in layouts[name].values())})"
        )
    return name, {role: raw_dir / fname for role, fname in found.items()}


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


def read_bytes(path: Path) -> bytes:
    """The content of ``path`` (gunzipped when it ends in .gz); missing, empty or corrupt -> DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); the file is truncated or corrupt") from None
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    return data


def decode(data: bytes, path: Path, encoding: str, first_line: int = 1) -> str:
    """Decode ``data`` (which starts at line ``first_line``); a bad byte -> DataError naming the
    file, line and encoding.

    A UTF-8 byte-order mark at the start of a file (what many Windows tools write) is dropped and
    the file is read as UTF-8, the encoding the mark declares, whatever ``encoding`` the format has.
    """
    if first_line == 1 and data.startswith(codecs.BOM_UTF8):
        data, encoding = data[len(codecs.BOM_UTF8) :], "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = first_line + data[: exc.start].count(b"\n")
        raise DataError(f"{path}: line {line} is not valid {encoding} ({exc.reason})") from None


def _binary_lines(path: Path) -> Iterator[bytes]:
    """The lines of ``path`` (gunzipped when it ends in .gz), streamed: review files can be huge."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            yield from stream
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); the file is truncated or corrupt") from None


def _split_lines(text: str, sep: str, quoted: bool) -> list[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank line; quoted files go through the csv module."""
    if quoted:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quotechar='"', escapechar="\\")
        return [(reader.line_num, fields) for fields in reader if any(f.strip() for f in fields)]
    lines = text.replace("\r\n", "\n").split("\n")
    return [(number, line.split(sep)) for number, line in enumerate(lines, start=1) if line.strip()]


def read_delimited(
    path: Path,
    sep: str,
    columns: Sequence[str],
    *,
    header: bool = False,
    encoding: str = "utf-8",
    quoted: bool = False,
    header_types: bool = False,
) -> pd.DataFrame:
    """Read a delimited text file into a frame of strings indexed by 1-based line number.

    Without ``header`` the file must have exactly ``len(columns)`` fields per line. With ``header``
    the first line names the columns (``name:type`` cells when ``header_types``, RecBole style); it
    must contain every name in ``columns``, extra columns are ignored. Every line must have as many
    fields as the header. Violations raise DataError naming the file, line and what was found, which
    is how a file with the wrong delimiter is caught ("expected 4 tab-separated fields, found 1").
    """
    path = Path(path)
    rows = _split_lines(decode(read_bytes(path), path, encoding), sep, quoted)
    if not rows:
        raise DataError(f"{path}: file is empty")
    sep_name = SEP_NAMES.get(sep, repr(sep))
    names = list(columns)
    if header:
        names = [cell.strip().split(":")[0] if header_types else cell.strip() for cell in rows.pop(0)[1]]
        absent = [c for c in columns if c not in names]
        if absent:
            raise DataError(
                f"{path}: missing column '{absent[0]}' (header line has {names}; "
                f"expected {sep_name}-separated columns {list(columns)})"
            )
    bad = [(number, fields) for number, fields in rows if len(fields) != len(names)]
    if bad:
        number, fields = bad[0]
        raise DataError(
            f"{path}: expected {len(names)} {sep_name}-separated fields, found {len(fields)} in line {number} "
            f"({sep.join(fields)[:80]!r}); {len(bad)} such line(s)"
        )
    if not rows:
        raise DataError(f"{path}: no data rows (only a header)")
    line_numbers, records = zip(*rows)
    positions = {column: names.index(column) for column in columns}
    data = {column: [r[i] for r in records] for column, i in positions.items()}
    return pd.DataFrame(data, index=pd.Index(line_numbers, name="line"))


def parse_record(line: str) -> object:
    """One JSON-lines record: strict JSON, else a Python literal (the 2014 Amazon metadata).

    ``ast.literal_eval`` only builds literals, never runs code, unlike the ``eval`` of the original
    reading scripts.
    """
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return ast.literal_eval(line)


def read_records(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> pd.DataFrame:
    """Read a JSON-lines file (optionally gzipped) into a frame of the given keys, indexed by line.

    Only the listed keys are kept (review files carry long texts we do not need), and the file is
    streamed. A line that does not parse or is not an object, an empty file and a required key
    absent from every record raise DataError.
    """
    path = Path(path)
    keys = [*required, *optional]
    line_numbers, records = [], []
    for number, raw in enumerate(_binary_lines(path), start=1):
        if not raw.strip():
            continue
        try:
            record = parse_record(decode(raw, path, "utf-8", first_line=number))
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise DataError(f"{path}: line {number} is neither JSON nor a Python literal ({exc})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is a {type(record).__name__}, expected an object")
        line_numbers.append(number)
        records.append({k: record[k] for k in keys if k in record})
    if not records:
        raise DataError(f"{path}: file is empty")
    frame = pd.DataFrame.from_records(records, index=pd.Index(line_numbers, name="line"), columns=keys)
    for key in required:
        if frame[key].isna().all():
            raise DataError(f"{path}: missing key '{key}' (absent or null in all {len(frame)} records)")
    return frame


# ----------------------------------------------------------------------------------------------
# Typed columns
# ----------------------------------------------------------------------------------------------


def examples(values: pd.Series) -> str:
    """ "'x' (line 3), 'y' (line 9)": the first few offending values with their line numbers."""
    shown = ", ".join(f"{v!r} (line {n})" for n, v in values.head(EXAMPLES).items())
    more = f" and {len(values) - EXAMPLES} more" if len(values) > EXAMPLES else ""
    return shown + more


def cleaned(values: pd.Series) -> pd.Series:
    """Raw values as stripped nullable strings; NaN/None and "no value" tokens become missing."""
    text = values.astype("string").str.strip()
    return text.mask(text.isin(MISSING_TOKENS))


def ids(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Column ``column`` as stripped id strings; any empty/NaN id -> DataError with line numbers."""
    values = cleaned(frame[column])
    missing = values.isna()
    if missing.any():
        raise DataError(
            f"{path}: column '{column}' has {int(missing.sum())} empty/NaN id(s): {examples(frame[column][missing])}"
        )
    return values


def numbers(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Column ``column`` as float64; non-numeric or empty values -> DataError naming a few of them."""
    parsed = pd.to_numeric(cleaned(frame[column]), errors="coerce")
    bad = parsed.isna()
    if bad.any():
        raise DataError(
            f"{path}: column '{column}' has {int(bad.sum())} non-numeric value(s): {examples(frame[column][bad])}"
        )
    return parsed.astype("float64")


def interactions(raw: pd.DataFrame, path: Path, user: str, item: str, rating: str, time: str | None) -> pd.DataFrame:
    """user_id, item_id (strings), rating (float) and timestamp (int seconds; 0 where the dataset
    has no time, ``time=None``) from the raw columns named, indexed by line."""
    return pd.DataFrame(
        {
            "user_id": ids(raw, user, path),
            "item_id": ids(raw, item, path),
            "rating": numbers(raw, rating, path),
            "timestamp": numbers(raw, time, path).astype("int64") if time else 0,
        }
    )


def optional_numbers(values: pd.Series) -> pd.Series:
    """A feature column as nullable Int64: anything that is not a number becomes missing."""
    return pd.to_numeric(values, errors="coerce").round().astype("Int64")


def unique_index(frame: pd.DataFrame, key: pd.Series, path: Path, what: str) -> pd.DataFrame:
    """``frame`` indexed by ``key`` (ids of a user/item file); a repeated id -> DataError."""
    dup = key.duplicated(keep=False)
    if dup.any():
        raise DataError(f"{path}: {what} appears more than once: {examples(key[dup])}")
    return frame.set_index(pd.Index(key.to_numpy(), name=what))


def check_references(
    frame: pd.DataFrame, key: pd.Series, known: pd.Index, path: Path, ref_path: Path, what: str, params: Params
) -> pd.DataFrame:
    """Rows whose ``key`` is not in ``known`` (ids of the user/item file) -> DataError with examples.

    ``data.missing_references: drop`` (default ``error``) drops them with a warning instead, for
    dumps known to reference ids their own feature file lacks.
    """
    unknown = ~key.isin(known)
    if not unknown.any():
        return frame
    policy = params.get_path("data.missing_references", "error")
    if policy not in MISSING_REFERENCE_POLICIES:
        raise ParamsError(
            f"{params.source}: data.missing_references must be one of {MISSING_REFERENCE_POLICIES}, got {policy!r}"
        )
    message = (
        f"{path}: {int(unknown.sum())} of {len(frame)} rows reference a {what} missing from {ref_path}: "
        f"{examples(key[unknown])}"
    )
    if policy == "error":
        raise DataError(message)
    log.warning("%s; dropped (data.missing_references=drop)", message)
    return frame[~unknown]


# ----------------------------------------------------------------------------------------------
# Shared feature conventions
# ----------------------------------------------------------------------------------------------

YEAR_IN_TITLE = re.compile(r"^(?P<head>.*)\((?P<year>\d{4})\)(?P<tail>.*)$")


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); the last '(YYYY)' anywhere in the title is taken.

    Returns (title without the year, year as Int64, missing where the title carries none).
    """
    titles = titles.astype("string")
    parts = titles.str.extract(YEAR_IN_TITLE)
    has_year = parts["year"].notna()
    stripped = (parts["head"] + parts["tail"]).str.replace(r"\s+", " ", regex=True).str.strip()
    return stripped.where(has_year, titles.str.strip()), optional_numbers(parts["year"])


def join_values(values: Iterable[str]) -> str | None:
    """Multi-valued field: unique non-empty values, sorted, '|'-joined; None when there are none."""
    kept = sorted({v.strip() for v in values if v and v.strip()})
    return SEPARATOR.join(kept) if kept else None


def age_group(age: pd.Series) -> pd.Series:
    """The age-group scenario: <25, 25-34, >=35; 'age-unknown' where the age is missing.

    Works on raw ages (ML-100K, BookCrossing) and on ML-1M's age codes (1, 18 | 25 | 35, 45, 50, 56),
    whose code boundaries coincide with these.
    """
    groups = pd.Series("age-unknown", index=age.index, dtype="string")
    known = age.notna()
    groups[known & (age < 25)] = "age<25"
    groups[known & (age >= 25) & (age < 35)] = "age25-34"
    groups[known & (age >= 35)] = "age>=35"
    return groups


# ----------------------------------------------------------------------------------------------
# Labels and the normalized frame
# ----------------------------------------------------------------------------------------------


def labels(rating: pd.Series, dataset: str, params: Params) -> pd.Series:
    """0/1 labels by ``data.label_rules.<dataset>`` (``rating <op> threshold``)."""
    key = f"data.label_rules.{dataset}"
    rule = params.get_path(key)
    if not isinstance(rule, dict) or rule.get("op") not in LABEL_OPS:
        raise ParamsError(f"{params.source}: {key}.op must be one of {sorted(LABEL_OPS)}, got {rule!r}")
    threshold = rule.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ParamsError(f"{params.source}: {key}.threshold must be a number, got {threshold!r}")
    return LABEL_OPS[rule["op"]](rating, threshold).astype("int64")


def normalized(frame: pd.DataFrame, dataset: str, params: Params) -> pd.DataFrame:
    """Add the label and return exactly ``columns_for(dataset)`` with their dtypes, sorted stably
    by (timestamp, user_id, item_id), with a fresh RangeIndex."""
    frame = frame.assign(label=labels(frame["rating"], dataset, params))
    schema = columns_for(dataset)
    table = frame[list(schema)].astype(schema)
    return table.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)
