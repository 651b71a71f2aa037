"""MovieLens loaders: ML-100K (RecBole atomic files or the original u.* files) and ML-1M (.dat files).

Every layout is first parsed into the same three frames -- interactions, users (indexed by id),
items (indexed by id) -- and then joined by one function, so the layouts can only differ in parsing.
Scenario = the user's age group (see ``common.age_group``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from assets.datasets.common import (
    age_group,
    check_references,
    cleaned,
    examples,
    ids,
    interactions,
    join_values,
    locate,
    normalized,
    numbers,
    optional_numbers,
    read_delimited,
    split_title_year,
    unique_index,
)
from assets.datasets.integrity import check_timestamps
from llm4ctr.errors import DataError
from llm4ctr.params import Params

ML100K_LAYOUTS = {
    "RecBole atomic": {"inter": ["ml-100k.inter"], "user": ["ml-100k.user"], "item": ["ml-100k.item"]},
    "original": {"inter": ["u.data"], "user": ["u.user"], "item": ["u.item"]},
}
ML1M_LAYOUTS = {"original": {"inter": ["ratings.dat"], "user": ["users.dat"], "item": ["movies.dat"]}}

# u.item's 19 genre flag columns, in file order
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# ML-1M users.dat: age codes (lower bound of the bracket) and occupation codes, from its README
ML1M_AGE_CODES = {1, 18, 25, 35, 45, 50, 56}
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
INTER = ["user_id", "item_id", "rating", "timestamp"]


def layouts(dataset: str, params: Params | None = None) -> dict:
    """The accepted raw layouts of ``dataset`` (``ml-100k`` or ``ml-1m``)."""
    return ML100K_LAYOUTS if dataset == "ml-100k" else ML1M_LAYOUTS


def load(dataset: str, raw_dir: Path, params: Params) -> pd.DataFrame:
    """The normalized interactions table of ML-100K (either layout) or ML-1M from ``raw_dir``."""
    layout, files = locate(raw_dir, layouts(dataset), dataset)
    if dataset == "ml-1m":
        parsed = _ml1m(files)
    elif layout == "original":
        parsed = _ml100k_original(files)
    else:
        parsed = _ml100k_atomic(files)
    return _assemble(*parsed, files, dataset, params)


# ----------------------------------------------------------------------------------------------
# Layout parsers: each returns (interactions, users by id, items by id)
# ----------------------------------------------------------------------------------------------


def _ml100k_atomic(files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """RecBole's ml-100k.{inter,user,item}: tab-separated, ``name:type`` header, UTF-8."""
    read = dict(sep="\t", header=True, header_types=True)
    inter = _ratings(files["inter"], **read)
    raw_users = read_delimited(files["user"], columns=["user_id", "age", "gender", "occupation", "zip_code"], **read)
    users = _users(raw_users, files["user"], zip_column="zip_code")
    raw_items = read_delimited(files["item"], columns=["item_id", "movie_title", "release_year", "class"], **read)
    title, title_year = split_title_year(raw_items["movie_title"])
    genres = [join_values(str(g).split(" ")) for g in raw_items["class"]]
    # RecBole's release_year is not always a year (e.g. 'V'); fall back to the title's
    year = optional_numbers(raw_items["release_year"]).fillna(title_year)
    return inter, users, _items(raw_items, files["item"], title, genres, year)


def _ml100k_original(files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """GroupLens' u.data (tab), u.user and u.item ('|', latin-1, 19 genre flags)."""
    inter = _ratings(files["inter"], sep="\t", encoding="latin-1")
    raw_users = read_delimited(
        files["user"], "|", ["user_id", "age", "gender", "occupation", "zip"], encoding="latin-1"
    )
    users = _users(raw_users, files["user"], zip_column="zip")
    columns = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
    raw_items = read_delimited(files["item"], "|", columns, encoding="latin-1")
    flags = pd.DataFrame({g: numbers(raw_items, g, files["item"]) == 1 for g in ML100K_GENRES})
    title, year = split_title_year(raw_items["title"])
    genres = [join_values(flags.columns[row]) for row in flags.to_numpy()]
    # release date 'dd-Mon-YYYY': only used when the title carries no year
    year = year.fillna(optional_numbers(raw_items["release_date"].str[-4:]))
    return inter, users, _items(raw_items, files["item"], title, genres, year)


def _ml1m(files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """ML-1M's ratings.dat, users.dat, movies.dat: '::'-separated, latin-1, coded age/occupation."""
    read = dict(sep="::", encoding="latin-1")
    inter = _ratings(files["inter"], **read)
    raw_users = read_delimited(files["user"], columns=["user_id", "gender", "age", "occupation", "zip"], **read)
    users = _users(raw_users, files["user"], zip_column="zip")
    bad_age = ~users["age"].isin(ML1M_AGE_CODES)
    if bad_age.any():
        raise DataError(
            f"{files['user']}: column 'age' must hold ML-1M age codes {sorted(ML1M_AGE_CODES)}: "
            f"{examples(raw_users['age'][bad_age.to_numpy()])}"
        )
    codes = pd.to_numeric(users["occupation"], errors="coerce")
    users["occupation"] = codes.map(dict(enumerate(ML1M_OCCUPATIONS))).astype("string").fillna(users["occupation"])
    raw_items = read_delimited(files["item"], columns=["item_id", "title", "genres"], **read)
    title, year = split_title_year(raw_items["title"])
    genres = [join_values(str(g).split("|")) for g in raw_items["genres"]]
    return inter, users, _items(raw_items, files["item"], title, genres, year)


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------


def _ratings(path: Path, **read) -> pd.DataFrame:
    """The interactions of a ratings file whose columns are user, item, rating, timestamp."""
    return interactions(read_delimited(path, columns=INTER, **read), path, *INTER)


def _users(raw: pd.DataFrame, path: Path, zip_column: str) -> pd.DataFrame:
    """gender, age (required: it defines the scenario), occupation, zip; indexed by user id."""
    users = pd.DataFrame(
        {
            "gender": cleaned(raw["gender"]),
            "age": numbers(raw, "age", path).round().astype("Int64"),
            "occupation": cleaned(raw["occupation"]),
            "zip": cleaned(raw[zip_column]),
        },
        index=raw.index,
    )
    return unique_index(users, ids(raw, "user_id", path), path, "user_id")


def _items(raw: pd.DataFrame, path: Path, title: pd.Series, genres: list, year: pd.Series) -> pd.DataFrame:
    """title, genres, year indexed by the (unique) item ids of the raw item file."""
    items = pd.DataFrame({"title": title, "genres": genres, "year": year}, index=raw.index)
    return unique_index(items, ids(raw, "item_id", path), path, "item_id")


def _assemble(
    inter: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, files: dict[str, Path], dataset: str, params: Params
) -> pd.DataFrame:
    """Check that every rating's time is plausible and its user and item exist, join their features,
    add the scenario."""
    check_timestamps(inter, files["inter"], params)
    inter = check_references(inter, inter["user_id"], users.index, files["inter"], files["user"], "user_id", params)
    inter = check_references(inter, inter["item_id"], items.index, files["inter"], files["item"], "item_id", params)
    frame = inter.join(users, on="user_id").join(items, on="item_id")
    return normalized(frame.assign(scenario=age_group(frame["age"])), dataset, params)
