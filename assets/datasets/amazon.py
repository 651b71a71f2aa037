"""Amazon reviews loader: reviews + metadata of one or more categories, 2014 or 2018 release.

2014: ``reviews_<Category>.json(.gz)`` (JSON lines) and ``meta_<Category>.json(.gz)`` whose lines
are Python dict literals with ``categories`` (a list of category paths). 2018: ``<Category>.json(.gz)``
and ``meta_<Category>.json(.gz)``, both JSON lines, metadata with ``category`` (one path). The 5-core
review files (``..._5.json.gz``) are accepted too. Each category is one scenario.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from assets.datasets.common import (
    check_references,
    cleaned,
    ids,
    interactions,
    locate,
    normalized,
    read_records,
)
from assets.datasets.integrity import check_timestamps
from assets.schema import SEPARATOR
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params

FORMATS = {
    # format -> (review file stem pattern, metadata key holding the category path)
    "2014": ("reviews_{category}", "categories"),
    "2018": ("{category}", "category"),
}
REVIEW_KEYS = ["reviewerID", "asin", "overall", "unixReviewTime"]


def settings(params: Params | None) -> tuple[list[str], str]:
    """(categories, format) from ``data.amazon``; ParamsError names the bad key."""
    if params is None:
        raise ParamsError("amazon needs params: data.amazon.categories and data.amazon.format")
    categories = params.get_path("data.amazon.categories")
    fmt = str(params.get_path("data.amazon.format"))
    if not categories or not isinstance(categories, list) or not all(isinstance(c, str) and c for c in categories):
        raise ParamsError(
            f"{params.source}: data.amazon.categories must be a non-empty list of names, got {categories!r}"
        )
    if fmt not in FORMATS:
        raise ParamsError(f"{params.source}: data.amazon.format must be one of {sorted(FORMATS)}, got {fmt!r}")
    return categories, fmt


def layouts(dataset: str, params: Params | None) -> dict:
    """One layout: for each category a review file and a metadata file, gzipped or plain."""
    categories, fmt = settings(params)
    stem = FORMATS[fmt][0]
    layout: dict[str, list[str]] = {}
    for category in categories:
        reviews = [stem.format(category=category), stem.format(category=category) + "_5"]
        layout[f"reviews:{category}"] = [f"{name}.json{gz}" for name in reviews for gz in (".gz", "")]
        layout[f"meta:{category}"] = [f"meta_{category}.json{gz}" for gz in (".gz", "")]
    return {f"Amazon {fmt}": layout}


def load(dataset: str, raw_dir: Path, params: Params) -> pd.DataFrame:
    """The normalized interactions table of the configured categories from ``raw_dir``."""
    categories, fmt = settings(params)
    _, files = locate(raw_dir, layouts(dataset, params), dataset)
    parts, metas = [], []
    for category in categories:
        reviews_path, meta_path = files[f"reviews:{category}"], files[f"meta:{category}"]
        items = _items(meta_path, FORMATS[fmt][1])
        inter = _reviews(reviews_path).assign(scenario=category)
        check_timestamps(inter, reviews_path, params)
        parts.append(check_references(inter, inter["item_id"], items.index, reviews_path, meta_path, "asin", params))
        metas.append(items)
    items = pd.concat(metas)
    items = items[~items.index.duplicated()]
    frame = pd.concat(parts).join(items, on="item_id")
    return normalized(frame, dataset, params)


def _reviews(path: Path) -> pd.DataFrame:
    """user_id, item_id, rating, timestamp from one review file, indexed by line."""
    return interactions(read_records(path, REVIEW_KEYS), path, *REVIEW_KEYS)


def _items(path: Path, category_key: str) -> pd.DataFrame:
    """title, category path, brand, price by asin. Repeated asins keep their first record: the
    2018 metadata files are known to list some products twice."""
    raw = read_records(path, ["asin"], ["title", category_key, "brand", "price"])
    asin = ids(raw, "asin", path)
    items = pd.DataFrame(
        {
            "title": cleaned(raw["title"]),
            "category": [_category_path(value) for value in raw[category_key]],
            "brand": cleaned(raw["brand"]),
            "price": cleaned(raw["price"]),
        },
        index=raw.index,
    ).set_index(pd.Index(asin.to_numpy(), name="asin"))
    return items[~items.index.duplicated()]


def _category_path(value: object) -> str | None:
    """'|'-joined category path: 2018 gives one path (a list), 2014 a list of paths (the first is
    taken). Empty entries and immediate repeats are dropped; the path order is kept."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        value = value[0]
    if not isinstance(value, list):
        return None
    path: list[str] = []
    for name in (str(v).strip() for v in value):
        if name and (not path or path[-1] != name):
            path.append(name)
    return SEPARATOR.join(path) or None
