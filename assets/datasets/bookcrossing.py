"""BookCrossing loader: the BX-CSV-Dump files (';'-separated, quoted, latin-1, with a header).

Ratings of 0 are implicit ("has interacted") and are dropped before the label rule; the rest are
explicit 1-10 ratings. The dump has no time, so every timestamp is 0. Scenario = the user's age
group, with 'age-unknown' for the many users whose age is missing or implausible.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from assets.datasets.common import (
    age_group,
    check_references,
    cleaned,
    ids,
    interactions,
    locate,
    normalized,
    optional_numbers,
    read_delimited,
    unique_index,
)
from llm4ctr.params import Params

LAYOUTS = {"BX-CSV-Dump": {"ratings": ["BX-Book-Ratings.csv"], "users": ["BX-Users.csv"], "books": ["BX-Books.csv"]}}
READ = dict(sep=";", header=True, encoding="latin-1", quoted=True)
AGE_RANGE = (5, 100)  # ages outside are treated as unknown (the dump has 0s and 200s)
IMPLICIT = 0  # Book-Rating 0: an implicit interaction, not a rating


def layouts(dataset: str, params: Params | None = None) -> dict:
    """The accepted raw layout (one: the three CSV files of the dump)."""
    return LAYOUTS


def load(dataset: str, raw_dir: Path, params: Params) -> pd.DataFrame:
    """The normalized interactions table of BookCrossing's explicit ratings from ``raw_dir``."""
    _, files = locate(raw_dir, LAYOUTS, dataset)
    raw = read_delimited(files["ratings"], columns=["User-ID", "ISBN", "Book-Rating"], **READ)
    inter = interactions(raw, files["ratings"], "User-ID", "ISBN", "Book-Rating", time=None)
    inter = inter[inter["rating"] != IMPLICIT]
    users, books = _users(files["users"]), _books(files["books"])
    inter = check_references(inter, inter["user_id"], users.index, files["ratings"], files["users"], "User-ID", params)
    inter = check_references(inter, inter["item_id"], books.index, files["ratings"], files["books"], "ISBN", params)
    frame = inter.join(users, on="user_id").join(books, on="item_id")
    return normalized(frame.assign(scenario=age_group(frame["age"])), dataset, params)


def _users(path: Path) -> pd.DataFrame:
    """location and age (missing where absent or outside AGE_RANGE), indexed by User-ID."""
    raw = read_delimited(path, columns=["User-ID", "Location", "Age"], **READ)
    age = optional_numbers(raw["Age"])
    users = pd.DataFrame(
        {"location": cleaned(raw["Location"]), "age": age.where(age.between(*AGE_RANGE))}, index=raw.index
    )
    return unique_index(users, ids(raw, "User-ID", path), path, "User-ID")


def _books(path: Path) -> pd.DataFrame:
    """title, author, year (missing where 0 or not a number), publisher, indexed by ISBN.

    The dump escapes '&' and friends as HTML entities ('Barnes &amp; Noble'); they are unescaped.
    """
    raw = read_delimited(
        path, columns=["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher"], **READ
    )
    year = optional_numbers(raw["Year-Of-Publication"])
    books = pd.DataFrame(
        {
            "title": _unescaped(raw["Book-Title"]),
            "author": _unescaped(raw["Book-Author"]),
            "year": year.where(year > 0),
            "publisher": _unescaped(raw["Publisher"]),
        },
        index=raw.index,
    )
    return unique_index(books, ids(raw, "ISBN", path), path, "ISBN")


def _unescaped(values: pd.Series) -> pd.Series:
    """Text with HTML entities decoded, missing tokens as missing."""
    return cleaned(values).map(html.unescape, na_action="ignore").astype("string")
