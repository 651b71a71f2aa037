"""The normalized interactions table every loader produces and every later stage reads.

One row per (user, item, timestamp) interaction. Key columns are the same for all datasets; user and
item feature columns depend on the dataset (``DATASET_FEATURES``). Ids are strings everywhere so
that ISBNs, ASINs and MovieLens integers share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

# column -> pandas dtype of the normalized table (nullable dtypes where the raw data has gaps)
KEY_COLUMNS: dict[str, str] = {
    "user_id": "string",
    "item_id": "string",
    "rating": "float64",
    "label": "int64",
    "timestamp": "int64",  # seconds since the epoch (0 where the dataset has no time)
    "scenario": "string",
}


@dataclass(frozen=True)
class FeatureColumns:
    """The dataset-specific feature columns: user side, item side, and their dtypes."""

    user: dict[str, str]
    item: dict[str, str]

    @property
    def all(self) -> dict[str, str]:
        return {**self.user, **self.item}


MOVIELENS = FeatureColumns(
    user={"gender": "string", "age": "Int64", "occupation": "string", "zip": "string"},
    # genres: '|'-joined genre names, the multi-valued field
    item={"title": "string", "genres": "string", "year": "Int64"},
)
BOOKCROSSING = FeatureColumns(
    user={"location": "string", "age": "Int64"},
    item={"title": "string", "author": "string", "year": "Int64", "publisher": "string"},
)
AMAZON = FeatureColumns(
    user={},
    # category: '|'-joined category path; price kept as text (often missing or a range)
    item={"title": "string", "category": "string", "brand": "string", "price": "string"},
)

DATASET_FEATURES: dict[str, FeatureColumns] = {
    "ml-100k": MOVIELENS,
    "ml-1m": MOVIELENS,
    "bookcrossing": BOOKCROSSING,
    "amazon": AMAZON,
}

MULTI_VALUED = {"genres", "category"}  # '|'-separated fields
SEPARATOR = "|"


def columns_for(dataset: str) -> dict[str, str]:
    """All columns (key + features) of ``dataset``'s normalized table, in canonical order."""
    return {**KEY_COLUMNS, **DATASET_FEATURES[dataset].all}
