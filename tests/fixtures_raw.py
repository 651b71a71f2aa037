"""Generators of small raw files in every format the loaders read, from one shared sample.

The same few users, items and ratings are written as RecBole atomic files, the original ML-100K
u.* files, ML-1M .dat files, the BookCrossing CSV dump and Amazon 2014/2018 JSON lines, so a test
can compare any loader's output with the sample below. Formats follow the real files byte for byte
in what matters (separators, quoting, encodings, headers, Python-literal 2014 metadata).
"""

from __future__ import annotations

import gzip
import json
import tarfile
import zipfile
from pathlib import Path

# user_id, raw age, gender, occupation, zip
ML_USERS = [
    ("1", 24, "M", "technician", "85711"),
    ("2", 53, "F", "other", "94043"),
    ("3", 25, "M", "writer", "32067"),
    ("4", 34, "F", "student", "01002"),
]
ML_SCENARIOS = {"1": "age<25", "2": "age>=35", "3": "age25-34", "4": "age25-34"}
# item_id, title (without year), year, genres (unsorted, as a file may list them)
ML_ITEMS = [
    ("1", "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
    ("2", "GoldenEye", 1995, ["Thriller", "Action", "Adventure"]),
    ("3", "Misérables, Les", 1995, ["Drama", "Musical"]),
]
# user_id, item_id, rating, timestamp -- written in this (unsorted) order; two share a timestamp
ML_RATINGS = [
    ("2", "1", 3, 881250949),
    ("1", "1", 5, 881250949),
    ("3", "2", 4, 881250950),
    ("4", "3", 1, 881250000),
    ("1", "2", 2, 881250951),
    ("2", "3", 4, 881250952),
]
# ML-1M users.dat codes for the same users: age code, occupation code
ML1M_USER_CODES = {"1": (18, 17), "2": (50, 0), "3": (25, 20), "4": (25, 4)}

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` with Unix newlines; ``.gz`` names are gzipped."""
    data = text.encode(encoding)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def _lines(rows: list[tuple], sep: str) -> str:
    return "".join(sep.join(str(v) for v in row) + "\n" for row in rows)


def write_ml100k_atomic(raw_dir: Path, ratings: list[tuple] = ML_RATINGS) -> Path:
    """RecBole's ml-100k.{inter,user,item}: tab-separated, ``name:type`` header, UTF-8."""
    _write(
        raw_dir / "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + _lines(ratings, "\t"),
    )
    _write(
        raw_dir / "ml-100k.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + _lines(ML_USERS, "\t"),
    )
    items = [(i, title, year, " ".join(genres)) for i, title, year, genres in ML_ITEMS]
    _write(
        raw_dir / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + _lines(items, "\t"),
    )
    return raw_dir


def write_ml100k_original(raw_dir: Path, ratings: list[tuple] = ML_RATINGS) -> Path:
    """GroupLens' u.data (tab), u.user ('|') and u.item ('|', latin-1, 19 genre flags)."""
    _write(raw_dir / "u.data", _lines(ratings, "\t"))
    _write(raw_dir / "u.user", _lines(ML_USERS, "|"))
    items = [
        (i, f"{title} ({year})", f"01-Jan-{year}", "", f"http://us.imdb.com/M/title-exact?{i}")
        + tuple(int(g in genres) for g in ML100K_GENRES)
        for i, title, year, genres in ML_ITEMS
    ]
    _write(raw_dir / "u.item", _lines(items, "|"), encoding="latin-1")
    return raw_dir


def write_ml1m(raw_dir: Path, ratings: list[tuple] = ML_RATINGS) -> Path:
    """ML-1M ratings.dat, users.dat, movies.dat: '::'-separated, latin-1, coded age/occupation."""
    _write(raw_dir / "ratings.dat", _lines(ratings, "::"), encoding="latin-1")
    users = [(u, g, *ML1M_USER_CODES[u], z) for u, _, g, _, z in ML_USERS]
    _write(raw_dir / "users.dat", _lines(users, "::"), encoding="latin-1")
    movies = [(i, f"{title} ({year})", "|".join(genres)) for i, title, year, genres in ML_ITEMS]
    _write(raw_dir / "movies.dat", _lines(movies, "::"), encoding="latin-1")
    return raw_dir


# BookCrossing: user_id, location, age as written ("NULL" and 230 become unknown)
BX_USERS = [
    ("276725", "tyler, texas, usa", "NULL"),
    ("276726", "seattle, washington, usa", "23"),
    ("276727", "rijeka, n/a, croatia", "30"),
    ("276729", "timmins, ontario, canada", "230"),
]
BX_SCENARIOS = {"276725": "age-unknown", "276726": "age<25", "276727": "age25-34", "276729": "age-unknown"}
BX_BOOKS = [
    ("034545104X", "Flesh Tones: A Novel", "M. J. Rose", "2002", "Ballantine Books"),
    ("0155061224", "Rites of Passage", "Judith Rae", "2001", "Heinle"),
    ("0446520802", "The Notebook", "Nicholas Sparks", "0", "Warner Books"),
    ("052165615X", "Help!: Level 1", "Philip Prowse", "1999", "Cambridge &amp; Sons"),
]
# user_id, ISBN, rating: 0 is implicit and is dropped; rows with 0 are first in the file
BX_RATINGS = [
    ("276725", "034545104X", "0"),
    ("276726", "0155061224", "5"),
    ("276727", "0446520802", "4"),
    ("276729", "052165615X", "10"),
    ("276725", "0446520802", "7"),
]


def _bx_lines(header: list[str], rows: list[tuple]) -> str:
    """The dump's quoting: every field in double quotes, ';' between, except a NULL age."""
    return "".join(";".join(_bx_quote(str(v)) for v in row) + "\r\n" for row in [tuple(header), *rows])


def _bx_quote(value: str) -> str:
    return value if value == "NULL" else f'"{value}"'


def write_bookcrossing(raw_dir: Path, ratings: list[tuple] = BX_RATINGS) -> Path:
    """BX-Book-Ratings.csv, BX-Users.csv, BX-Books.csv as in BX-CSV-Dump.zip (latin-1, CRLF)."""
    _write(raw_dir / "BX-Book-Ratings.csv", _bx_lines(["User-ID", "ISBN", "Book-Rating"], ratings), "latin-1")
    _write(raw_dir / "BX-Users.csv", _bx_lines(["User-ID", "Location", "Age"], BX_USERS), "latin-1")
    header = ["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher", "Image-URL-S"]
    books = [(*book, f"http://images.amazon.com/images/P/{book[0]}.01.THUMBZZZ.jpg") for book in BX_BOOKS]
    _write(raw_dir / "BX-Books.csv", _bx_lines(header, books), "latin-1")
    return raw_dir


# Amazon: category -> (reviews: reviewerID, asin, overall, unixReviewTime; items: asin, title, path, brand, price)
AMAZON = {
    "Gift_Cards": (
        [
            ("A1B2C3", "B001GXRQW0", 5.0, 1389571200),
            ("A9Z8Y7", "B001GXRQW0", 2.0, 1389657600),
            ("A1B2C3", "B004LLIKVU", 4.0, 1389571200),
        ],
        [
            ("B001GXRQW0", "Amazon.com Gift Card", ["Gift Cards", "Gift Card Categories"], "Amazon", 25.0),
            ("B004LLIKVU", "Amazon eGift Card - Congrats", ["Gift Cards"], None, None),
        ],
    ),
    "Magazine_Subscriptions": (
        [("A9Z8Y7", "B00005N7P0", 3.0, 1100000000)],
        [("B00005N7P0", "Newsweek", ["Magazine Subscriptions", "News & Politics"], "Newsweek", 19.99)],
    ),
}


def write_amazon(raw_dir: Path, fmt: str = "2018", gz: bool = True) -> Path:
    """Reviews and metadata of every category in AMAZON, in the 2014 or 2018 file layout."""
    ext = ".json.gz" if gz else ".json"
    for category, (reviews, items) in AMAZON.items():
        review_name = f"reviews_{category}" if fmt == "2014" else category
        review_lines = [
            json.dumps({"reviewerID": u, "asin": a, "reviewerName": "x", "overall": r, "reviewText": "ok",
                        "unixReviewTime": t, "reviewTime": "01 13, 2014"})
            for u, a, r, t in reviews
        ]  # fmt: skip
        _write(raw_dir / f"{review_name}{ext}", "\n".join(review_lines) + "\n")
        _write(raw_dir / f"meta_{category}{ext}", "\n".join(_amazon_meta(item, fmt) for item in items) + "\n")
    return raw_dir


def _amazon_meta(item: tuple, fmt: str) -> str:
    """2014: a Python dict literal with ``categories`` (list of paths) and a float price;
    2018: JSON with ``category`` (one path) and a '$' price string. Absent values are left out."""
    asin, title, path, brand, price = item
    if fmt == "2014":
        record = {"asin": asin, "title": title, "categories": [path, ["Other"]], "brand": brand, "price": price}
        return repr({k: v for k, v in record.items() if v is not None})
    record = {"asin": asin, "title": title, "category": path, "brand": brand, "price": price and f"${price:.2f}"}
    return json.dumps({k: v for k, v in record.items() if v is not None})


# ----------------------------------------------------------------------------------------------
# Archives, as the sources serve them
# ----------------------------------------------------------------------------------------------


def make_zip(src_dir: Path, zip_path: Path, prefix: str = "") -> Path:
    """Zip every file of ``src_dir`` under ``prefix`` (GroupLens zips put files in 'ml-100k/')."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(src_dir.iterdir()):
            archive.write(path, prefix + path.name)
    return zip_path


def make_tar(src_dir: Path, tar_path: Path, prefix: str = "") -> Path:
    """A gzipped tarball of every file of ``src_dir`` under ``prefix``."""
    with tarfile.open(tar_path, "w:gz") as archive:
        for path in sorted(src_dir.iterdir()):
            archive.add(path, prefix + path.name)
    return tar_path


def make_recbole_wheel(wheel_path: Path) -> Path:
    """A stand-in for the recbole wheel: a zip holding the atomic sample where recbole keeps ml-100k,
    plus a member that must not be copied (ml-100k.kg)."""
    src = write_ml100k_atomic(wheel_path.parent / "wheel-src")
    with zipfile.ZipFile(wheel_path, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
        for path in sorted(src.iterdir()):
            archive.write(path, f"recbole/dataset_example/ml-100k/{path.name}")
        archive.writestr("recbole/dataset_example/ml-100k/ml-100k.kg", "head_id:token\n")
    return wheel_path


def truncated_copy(path: Path, dest: Path, keep: float = 0.5) -> Path:
    """``dest`` holding the first ``keep`` fraction of ``path``: an interrupted download."""
    data = path.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``root``: to compare directories byte for byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
