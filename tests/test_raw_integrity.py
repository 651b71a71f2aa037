"""Raw-file integrity at ingest: fetched files must still match the md5s fetch recorded (and their
pins), local files must not be cut off, timestamps must be plausible, a UTF-8 byte-order mark is
read, and a refused input leaves the previous ingest output byte-identical."""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from assets import ingest
from assets.datasets import load_interactions
from assets.fetch import MANIFEST, RECBOLE_WHEEL, fetch
from llm4ctr.errors import ChecksumError, DataError, ParamsError
from llm4ctr.params import Params, load_params
from tests import fixtures_raw as F

ROOT = Path(__file__).resolve().parents[1]


def params_with(**overrides) -> Params:
    """The project's params.yaml with dotted overrides (``data__x`` stands for ``data.x``)."""
    return load_params(ROOT / "params.yaml", {k.replace("__", "."): v for k, v in overrides.items()})


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def refused(error: type[Exception], dataset: str, raw_dir: Path, *fragments: str, **kwargs) -> str:
    """Load and assert ``error`` whose message contains every fragment; return the message."""
    with pytest.raises(error) as info:
        load_interactions(dataset, raw_dir, kwargs.pop("params", None) or params_with(), **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture
def fetched(tmp_path) -> tuple[Path, dict]:
    """data/ml-100k fetched from a cached stand-in recbole wheel (pip never runs), and the pins used:
    the wheel's sha256 only, so here the member names are not pinned."""
    wheel = F.make_recbole_wheel(tmp_path / "cache" / "wheels" / RECBOLE_WHEEL)
    pins = {RECBOLE_WHEEL: ("sha256", hashlib.sha256(wheel.read_bytes()).hexdigest())}
    raw_dir = tmp_path / "data" / "ml-100k"
    assert fetch("ml-100k", raw_dir, source="wheel", cache=tmp_path / "cache", checksums=pins)["source"] == "wheel"
    return raw_dir, pins


# ----------------------------------------------------------------------------------------------
# Fetched data: checksums
# ----------------------------------------------------------------------------------------------


def test_fetched_file_changed_after_fetch_is_refused_and_both_fixes_work(fetched, tmp_path):
    raw_dir, pins = fetched
    inter = raw_dir / "ml-100k.inter"
    recorded = json.loads((raw_dir / MANIFEST).read_text())["files"]["ml-100k.inter"]
    lines = inter.read_text().splitlines(keepends=True)
    inter.write_text("".join(lines[:-2]))  # two rows lost at a line boundary: only the checksum can tell
    message = refused(
        ChecksumError, "ml-100k", raw_dir, str(inter), f"md5 {md5(inter)} does not match {recorded}",
        "source wheel", "llm4ctr fetch --dataset ml-100k --force",
        f"llm4ctr fetch --dataset ml-100k --source local --local {raw_dir}", checksums=pins,
    )  # fmt: skip
    assert "\n" not in message  # the CLI prints it as one line
    # fix 1, the change is intended: record the folder as local data, exactly as the message says
    cache = tmp_path / "cache"
    report = fetch("ml-100k", raw_dir, source="local", local_path=str(raw_dir), cache=cache, checksums=pins)
    assert report["source"] == "local"
    assert len(load_interactions("ml-100k", raw_dir, params_with(), checksums=pins)) == len(F.ML_RATINGS) - 2
    # local data is not checksum-checked (changed again after its record, it still loads) ...
    inter.write_text("".join(lines[:-3]))
    assert len(load_interactions("ml-100k", raw_dir, params_with(), checksums=pins)) == len(F.ML_RATINGS) - 3
    # ... but is checked for a cut
    inter.write_bytes(inter.read_bytes()[:-4])
    refused(DataError, "ml-100k", raw_dir, str(inter), "ends without a newline", checksums=pins)
    # fix 2: fetch again
    fetch("ml-100k", raw_dir, source="wheel", cache=cache, checksums=pins, force=True)
    assert len(load_interactions("ml-100k", raw_dir, params_with(), checksums=pins)) == len(F.ML_RATINGS)


def test_pinned_file_must_also_match_its_pin(fetched):
    raw_dir, pins = fetched
    inter = raw_dir / "ml-100k.inter"
    pinned = {**pins, "ml-100k.inter": ("md5", "0" * 32)}
    message = refused(
        ChecksumError, "ml-100k", raw_dir, str(inter), f"md5 {md5(inter)} does not match the pinned {'0' * 32}",
        "llm4ctr fetch --dataset ml-100k --force", checksums=pinned,
    )  # fmt: skip
    assert "--local" not in message  # fetch would refuse a changed copy of a pinned file as local data
    # the real table pins RecBole's published files, which the generated sample is not
    refused(ChecksumError, "ml-100k", raw_dir, str(inter), "does not match the pinned a8a8c3f1")


def test_unreadable_fetch_record(fetched):
    raw_dir, pins = fetched
    (raw_dir / MANIFEST).write_text('{"source": "wheel"')
    record = raw_dir / MANIFEST
    refused(DataError, "ml-100k", raw_dir, str(record), "unreadable fetch record", "--force", checksums=pins)


# ----------------------------------------------------------------------------------------------
# Local data: a file cut mid-line
# ----------------------------------------------------------------------------------------------

CUT_FILES = [  # (dataset, writer, file): every local plain-text format
    ("ml-100k", F.write_ml100k_atomic, "ml-100k.inter"),
    ("ml-100k", F.write_ml100k_original, "u.item"),
    ("ml-1m", F.write_ml1m, "users.dat"),
    ("bookcrossing", F.write_bookcrossing, "BX-Books.csv"),
    ("amazon", lambda raw: F.write_amazon(raw, "2018", gz=False), "meta_Gift_Cards.json"),
]


@pytest.mark.parametrize(("dataset", "writer", "name"), CUT_FILES, ids=[c[2] for c in CUT_FILES])
def test_file_cut_mid_line_names_file_line_and_value(tmp_path, dataset, writer, name):
    raw_dir = writer(tmp_path)
    path = raw_dir / name
    data = path.read_bytes()
    path.write_bytes(data[:-6])  # the final newline and a few characters lost
    line = data.count(b"\n")  # the last line, now without its newline
    tail = data[:-6].rsplit(b"\n", 1)[-1][-20:].decode("ascii")  # how the cut line ends
    params = params_with(data__amazon__categories=list(F.AMAZON))
    cut = f"line {line} ends without a newline"
    refused(DataError, dataset, raw_dir, str(path), cut, repr(tail)[1:-1], params=params)


def test_the_users_case_a_timestamp_cut_to_88(tmp_path):
    """ML-100K's inter file cut in the last row's timestamp: wrongly accepted as a smaller dataset before."""
    raw_dir = F.write_ml100k_atomic(tmp_path)
    inter = raw_dir / "ml-100k.inter"
    inter.write_text(inter.read_text()[: -len("1250952\n")])  # last row: 2, 3, 4, 88
    refused(DataError, "ml-100k", raw_dir, str(inter), "line 7 ends without a newline ('2\\t3\\t4\\t88')")
    inter.write_text(inter.read_text() + "\n")  # with a newline added, the value itself is implausible
    refused(DataError, "ml-100k", raw_dir, str(inter), "1 timestamp(s) outside data.timestamp_range", "88 (line 7)")


# ----------------------------------------------------------------------------------------------
# Timestamps
# ----------------------------------------------------------------------------------------------


def test_timestamps_outside_the_range_are_named(tmp_path):
    ratings = [*F.ML_RATINGS]
    ratings[1] = ("1", "1", 5, 881250949000)  # milliseconds
    raw_dir = F.write_ml1m(tmp_path / "ml-1m", ratings=ratings)
    refused(
        DataError, "ml-1m", raw_dir, str(raw_dir / "ratings.dat"), "(1995-01-01 to 2030-01-01)",
        "881250949000 (line 2)", "params.yaml",
    )  # fmt: skip
    assert len(load_interactions("ml-1m", raw_dir, params_with(data__timestamp_range=None))) == len(ratings)
    as_yaml_dates = params_with(data__timestamp_range=[dt.date(1995, 1, 1), dt.date(2030, 1, 1)])
    refused(DataError, "ml-1m", raw_dir, "881250949000 (line 2)", params=as_yaml_dates)
    raw_dir = F.write_amazon(tmp_path / "amazon", "2018", gz=True)
    params = params_with(data__amazon__categories=list(F.AMAZON), data__timestamp_range=["2005-01-01", 1400000000])
    path = raw_dir / "Magazine_Subscriptions.json.gz"
    refused(DataError, "amazon", raw_dir, str(path), "(2005-01-01 to 2014-05-13)", "1100000000 (line 1)", params=params)


@pytest.mark.parametrize("bad", [["1995-01-01"], ["2030-01-01", "1995-01-01"], ["1995-01-01", "soon"], "1995"])
def test_bad_timestamp_range_is_a_params_error(tmp_path, bad):
    raw_dir = F.write_ml1m(tmp_path)
    with pytest.raises(ParamsError, match="data.timestamp_range"):
        load_interactions("ml-1m", raw_dir, params_with(data__timestamp_range=bad))


# ----------------------------------------------------------------------------------------------
# A UTF-8 byte-order mark is read, not rejected
# ----------------------------------------------------------------------------------------------

BOM_CASES = [  # (dataset, writer, the format's encoding, params overrides)
    ("ml-100k", F.write_ml100k_atomic, "utf-8", {}),
    ("ml-100k", F.write_ml100k_original, "latin-1", {}),  # u.item saved as UTF-8 with a BOM
    ("ml-1m", F.write_ml1m, "latin-1", {}),
    ("bookcrossing", F.write_bookcrossing, "latin-1", {}),
    ("amazon", lambda raw: F.write_amazon(raw, "2014", gz=True), "utf-8", {"data__amazon__format": "2014"}),
    ("amazon", lambda raw: F.write_amazon(raw, "2018", gz=False), "utf-8", {}),
]


@pytest.mark.parametrize(("dataset", "writer", "encoding", "overrides"), BOM_CASES)
def test_bom_file_reads_like_the_file_without_it(tmp_path, dataset, writer, encoding, overrides):
    params = params_with(data__amazon__categories=list(F.AMAZON), **overrides)
    plain, marked = writer(tmp_path / "plain"), writer(tmp_path / "bom")
    for path in marked.iterdir():  # what a Windows editor writes: UTF-8 with a byte-order mark
        gz = path.suffix == ".gz"
        text = (gzip.decompress(path.read_bytes()) if gz else path.read_bytes()).decode(encoding)
        data = codecs.BOM_UTF8 + text.encode("utf-8")
        path.write_bytes(gzip.compress(data) if gz else data)
    expected = load_interactions(dataset, plain, params)
    pd.testing.assert_frame_equal(load_interactions(dataset, marked, params), expected)


def test_bom_only_file_is_empty(tmp_path):
    raw_dir = F.write_ml100k_atomic(tmp_path)
    (raw_dir / "ml-100k.user").write_bytes(codecs.BOM_UTF8 + b"\n")
    refused(DataError, "ml-100k", raw_dir, str(raw_dir / "ml-100k.user"), "file is empty")


# ----------------------------------------------------------------------------------------------
# The ingest stage keeps its previous good output
# ----------------------------------------------------------------------------------------------


def test_refused_raw_files_leave_the_previous_ingest_output_intact(fetched, monkeypatch):
    raw_dir, pins = fetched
    root = raw_dir.parents[1]
    params = params_with()
    monkeypatch.setattr("assets.fetch.CHECKSUMS", pins)  # the stand-in wheel's pins, as fetch used them
    ingest.run(params, root)
    out = root / "artifacts" / "ingest" / "ml-100k"
    before = F.tree_bytes(out)
    inter = raw_dir / "ml-100k.inter"
    inter.write_bytes(inter.read_bytes()[:-5])
    with pytest.raises(ChecksumError, match="ml-100k.inter"):
        ingest.run(params, root)
    (raw_dir / MANIFEST).unlink()  # now local data: refused for the cut instead
    with pytest.raises(DataError, match="ends without a newline"):
        ingest.run(params, root)
    assert F.tree_bytes(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["ml-100k"]  # no temporary leftovers
