"""Obtaining a dataset's raw files into data/<dataset>/ from the first source that can provide them.

Sources: ``url`` (the canonical download, streamed into the cache with a progress bar), ``local``
(an archive, file or folder the user points to) and ``wheel`` (ML-100K only: RecBole's atomic files
inside the ``recbole`` wheel on PyPI, which is downloaded with pip but never installed). ``auto``
tries them in that order. Every archive and file with a pinned checksum is verified; only the files
a loader reads are kept. raw_dir is replaced atomically, so a failed fetch leaves a previous good
raw_dir untouched, and a raw_dir that is already complete and intact is left alone. There is no
fallback to synthetic data: when no source works, SourceUnavailable lists every attempt.
"""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from assets.datasets import raw_layouts
from assets.datasets.common import describe_layouts, match_layout
from assets.datasets.integrity import CHUNK, MANIFEST, digest, read_manifest, verify
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import ChecksumError, DataError, Llm4ctrError, OutputLocked, ParamsError, SourceUnavailable
from llm4ctr.params import Params
from llm4ctr.paths import cache_dir

SOURCES = ("url", "local", "wheel")
TIMEOUT_S = 15  # per network operation: unreachable hosts fail fast

URLS: dict[str, tuple[str, ...]] = {
    "ml-100k": ("https://files.grouplens.org/datasets/movielens/ml-100k.zip",),
    "ml-1m": ("https://files.grouplens.org/datasets/movielens/ml-1m.zip",),
    "bookcrossing": ("http://www2.informatik.uni-freiburg.de/~cziegler/BX/BX-CSV-Dump.zip",),
    # Amazon: per category, reviews then metadata ({category} is filled in)
    "amazon:2014": (
        "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_{category}.json.gz",
        "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_{category}.json.gz",
    ),
    "amazon:2018": (
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/categoryFiles/{category}.json.gz",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/metaFiles2/meta_{category}.json.gz",
    ),
}

RECBOLE = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"

# File name -> (algorithm, hex digest). Checked whenever a file of that name is downloaded, supplied
# locally or extracted into raw_dir. No checksum is published for BX-CSV-Dump.zip or the Amazon
# files, so they are not pinned.
CHECKSUMS: dict[str, tuple[str, str]] = {
    # verified here: downloaded from PyPI with `pip download` and hashed on this project's machine
    RECBOLE_WHEEL: ("sha256", "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"),
    # verified here: the three members of that wheel (also in docs MODELS_AND_DATA.md)
    "ml-100k.inter": ("md5", "a8a8c3f165aedc53f63b5dc0a0463b14"),
    "ml-100k.user": ("md5", "ac50ecbab626dbefa83288a3593f92ab"),
    "ml-100k.item": ("md5", "fb748e97e64d9a35421d06d7083d0959"),
    # NOT verified here (GroupLens is unreachable from this machine): GroupLens' published md5s
    "ml-100k.zip": ("md5", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m.zip": ("md5", "c4d9eecfca2ab87c1945afe126590906"),
}


def fetch(
    dataset: str,
    raw_dir: Path,
    source: str = "auto",
    local_path: str | None = None,
    cache: Path | None = None,
    params: Params | None = None,
    *,
    checksums: Mapping[str, tuple[str, str]] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Put ``dataset``'s raw files into ``raw_dir``; return what was done.

    The report: ``{"dataset", "source": the source used ("existing" when raw_dir was already
    complete and intact), "attempts": [{"source", "ok", "error"}, ...], "files": {name: md5}}``.
    ``checksums`` replaces the pinned table (tests); ``force`` re-fetches even an intact raw_dir.
    An explicitly named source re-raises its own error; ``auto`` raises SourceUnavailable listing
    every attempt's error when none works.
    """
    checksums = CHECKSUMS if checksums is None else checksums
    layouts = raw_layouts(dataset, params)
    plan = _plan(dataset, source, local_path)
    raw_dir = Path(raw_dir)
    existing = None if force else _intact(raw_dir, layouts, checksums)
    if existing is not None:
        return {"dataset": dataset, "source": "existing", "attempts": [], "files": existing}
    cache = Path(cache) if cache is not None else cache_dir()
    attempts: list[dict[str, Any]] = []
    for name in plan:
        try:
            with atomic_dir(raw_dir) as tmp:
                origins = _obtain(name, dataset, local_path, cache, params, checksums)
                files = _collect_all(origins, layouts, dataset, tmp, checksums)
                (tmp / MANIFEST).write_text(json.dumps({"source": name, "files": files}, indent=2, sort_keys=True))
        except OutputLocked:
            raise  # another fetch is writing data/<dataset>/: no other source can help
        except Llm4ctrError as exc:
            attempts.append({"source": name, "ok": False, "error": str(exc)})
            if source != "auto":
                raise
            continue
        attempts.append({"source": name, "ok": True, "error": None})
        return {"dataset": dataset, "source": name, "attempts": attempts, "files": files}
    tried = "\n".join(f"  {a['source']}: {a['error']}" for a in attempts)
    raise SourceUnavailable(f"{dataset}: no source could provide the raw files; tried:\n{tried}")


def _plan(dataset: str, source: str, local_path: str | None) -> list[str]:
    """The sources to try, in order; a source that cannot apply is refused with the reason."""
    if source == "auto":
        return ["url"] + (["local"] if local_path else []) + (["wheel"] if dataset == "ml-100k" else [])
    if source not in SOURCES:
        raise ParamsError(f"data.source: unknown source {source!r}; expected auto or one of {', '.join(SOURCES)}")
    if source == "local" and not local_path:
        raise ParamsError("data.source is 'local' but no path is given (set data.local_path or pass --local)")
    if source == "wheel" and dataset != "ml-100k":
        raise SourceUnavailable(f"wheel: only ml-100k ships in a PyPI wheel ({RECBOLE}); {dataset} does not")
    return [source]


def _obtain(
    name: str, dataset: str, local_path: str | None, cache: Path, params: Params | None, checksums: Mapping
) -> list[Path]:
    """The archives/files/folders source ``name`` provides, verified where a checksum is pinned."""
    if name == "url":
        return [_download(url, cache / "downloads", checksums) for url in _urls(dataset, params)]
    if name == "local":
        path = Path(str(local_path)).expanduser()
        if not path.exists():
            raise SourceUnavailable(f"local: {path} does not exist")
        if path.is_file():
            verify(path, path.name, checksums)
        return [path]
    return [_recbole_wheel(cache / "wheels", checksums)]


def _urls(dataset: str, params: Params | None) -> list[str]:
    """The canonical download URLs of ``dataset`` (Amazon: two per configured category)."""
    if dataset != "amazon":
        return list(URLS[dataset])
    from assets.datasets.amazon import settings

    categories, fmt = settings(params)
    return [url.format(category=c) for c in categories for url in URLS[f"amazon:{fmt}"]]


# ----------------------------------------------------------------------------------------------
# Checksums (digest, verify and the fetch record live in assets.datasets.integrity, which ingest uses)
# ----------------------------------------------------------------------------------------------


def _intact(raw_dir: Path, layouts: Mapping, checksums: Mapping) -> dict[str, str] | None:
    """{name: md5} when raw_dir already holds a complete layout whose files match their pinned
    checksums and the md5s recorded by the fetch that wrote them; None when it must be fetched."""
    if not raw_dir.is_dir():
        return None
    paths = {p.name: p for p in raw_dir.iterdir() if p.is_file() and p.name != MANIFEST}
    _, found, missing = match_layout(paths, layouts)
    if not found or missing:
        return None
    try:
        for name, path in paths.items():
            verify(path, name, checksums)
    except ChecksumError:
        return None
    files = {name: digest(path) for name, path in sorted(paths.items())}
    try:
        record = read_manifest(raw_dir)
    except DataError:
        return None  # an unreadable record: fetch again rather than trust the files
    return files if record is None or record["files"] == files else None


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


def _download(url: str, downloads: Path, checksums: Mapping) -> Path:
    """``url`` as a file in the download cache, reused when already there and intact.

    Streams to ``<name>.part`` with a progress bar and renames only a complete, verified download.
    """
    name = url.rsplit("/", 1)[-1]
    target = downloads / name
    if target.is_file():
        try:
            verify(target, name, checksums)
            return target
        except ChecksumError:
            target.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / f"{name}.part"
    try:
        _stream(url, part)
        verify(part, name, checksums, origin=url)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    return target


def _stream(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` with a tqdm progress bar; network failures -> SourceUnavailable."""
    from llm4ctr.progress import bar as progress_bar

    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=dest.name[: -len(".part")]) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts, resets
        raise SourceUnavailable(f"url: cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    if total is not None and dest.stat().st_size != total:
        raise DataError(f"{url}: download truncated ({dest.stat().st_size} of {total} bytes)")


def _recbole_wheel(wheels: Path, checksums: Mapping) -> Path:
    """The recbole wheel in the cache, downloaded with ``pip download --no-deps`` when missing or
    corrupt; recbole is never installed."""
    wheel = wheels / RECBOLE_WHEEL
    if wheel.is_file():
        try:
            verify(wheel, wheel.name, checksums)
            return wheel
        except ChecksumError:
            wheel.unlink()
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--retries", "1", "--timeout", str(TIMEOUT_S), RECBOLE, "-d", str(wheels),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"wheel: `pip download {RECBOLE}` did not finish in 600 s") from None
    if done.returncode != 0 or not wheel.is_file():
        output = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SourceUnavailable(f"wheel: `pip download {RECBOLE}` failed: {' | '.join(output) or 'no output'}")
    try:
        verify(wheel, wheel.name, checksums)
    except ChecksumError:
        wheel.unlink()
        raise
    return wheel


# ----------------------------------------------------------------------------------------------
# Taking the needed files out of archives, folders and plain files
# ----------------------------------------------------------------------------------------------

ZIP_SUFFIXES = (".zip", ".whl")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _collect_all(origins: list[Path], layouts: Mapping, dataset: str, dest: Path, checksums: Mapping) -> dict[str, str]:
    """Copy the wanted files of every origin into ``dest``, check a layout is complete and every
    pinned file matches; return {name: md5}."""
    wanted = {name for layout in layouts.values() for names in layout.values() for name in names}
    for origin in origins:
        _collect(origin, wanted, dest)
    where = ", ".join(str(o) for o in origins)
    present = sorted(p.name for p in dest.iterdir())
    _, found, missing = match_layout(present, layouts)
    if not found or missing:
        raise DataError(
            f"{where}: does not contain the {dataset} raw files: missing {', '.join(missing)} "
            f"(expected {describe_layouts(layouts)}; found {', '.join(present) or 'none of them'})"
        )
    for name in present:
        verify(dest / name, name, checksums, origin=where)
    return {name: digest(dest / name) for name in present}


def _collect(origin: Path, wanted: set[str], dest: Path) -> None:
    """Copy the files of ``origin`` whose names are ``wanted`` into ``dest`` (flat, by name)."""
    name = origin.name.lower()
    if origin.is_dir():
        for path in _shallowest(p for p in origin.rglob("*") if p.is_file() and p.name in wanted):
            shutil.copyfile(path, dest / path.name)
    elif name.endswith(ZIP_SUFFIXES):
        _from_zip(origin, wanted, dest)
    elif name.endswith(TAR_SUFFIXES):
        _from_tar(origin, wanted, dest)
    elif origin.name in wanted:
        if name.endswith(".gz"):
            _check_gzip(origin)
        shutil.copyfile(origin, dest / origin.name)
    else:
        raise DataError(
            f"{origin}: not a zip or tar archive, a folder, or one of the raw files ({', '.join(sorted(wanted))})"
        )


def _shallowest(paths: Iterator[Path]) -> list[Path]:
    """One path per file name, the least deeply nested (then alphabetically first) one."""
    chosen: dict[str, Path] = {}
    for path in sorted(paths, key=lambda p: (len(p.parts), str(p))):
        chosen.setdefault(path.name, path)
    return list(chosen.values())


def _from_zip(archive_path: Path, wanted: set[str], dest: Path) -> None:
    """Extract the wanted members of a zip (or wheel); truncated/corrupt -> DataError naming it."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = {Path(m.filename): m for m in archive.infolist() if not m.is_dir()}
            for path in _shallowest(p for p in members if p.name in wanted):
                _copy_member(archive.open(members[path]), dest / path.name, archive_path, str(path))
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{archive_path}: not a readable zip archive ({exc}); truncated or corrupt?") from None


def _from_tar(archive_path: Path, wanted: set[str], dest: Path) -> None:
    """Extract the wanted members of a tar archive (any compression); corrupt -> DataError."""
    try:
        with tarfile.open(archive_path) as archive:
            members = {Path(m.name): m for m in archive.getmembers() if m.isfile()}
            for path in _shallowest(p for p in members if p.name in wanted):
                _copy_member(archive.extractfile(members[path]), dest / path.name, archive_path, str(path))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{archive_path}: not a readable tar archive ({exc}); truncated or corrupt?") from None


def _copy_member(stream: IO[bytes] | None, target: Path, archive_path: Path, member: str) -> None:
    """Stream one archive member to ``target``; a CRC or decompression error names the member."""
    assert stream is not None, "only regular files are extracted"
    try:
        with stream, target.open("wb") as out:
            shutil.copyfileobj(stream, out, CHUNK)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive_path}: member {member} is corrupt ({exc})") from None


def _check_gzip(path: Path) -> None:
    """Read a .gz file to its end, so a truncated download is caught here rather than at ingest."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); truncated or corrupt?") from None
