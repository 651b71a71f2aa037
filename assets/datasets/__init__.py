"""Raw-data loaders: the raw files of one dataset -> the normalized interactions table.

One module per dataset family (``movielens``, ``bookcrossing``, ``amazon``). Each declares the file
layouts it accepts (``layouts``), which ``assets.fetch`` also uses to know which files to keep, and
a ``load`` that returns exactly ``assets.schema.columns_for(dataset)``. Problems a user can cause
(missing or malformed files, bad values) raise ``DataError`` naming the file and the line or value.
Before a loader reads anything, ``integrity`` checks that the files are still the ones fetched, or,
for local data, that none is cut off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import pandas as pd

from assets.datasets import amazon, bookcrossing, movielens
from assets.datasets.common import locate
from assets.datasets.integrity import check_raw_files
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params

FAMILIES: dict[str, ModuleType] = {
    "ml-100k": movielens,
    "ml-1m": movielens,
    "bookcrossing": bookcrossing,
    "amazon": amazon,
}


def _family(dataset: str) -> ModuleType:
    """The loader module of ``dataset``; an unknown name -> ParamsError listing the known ones."""
    if dataset not in FAMILIES:
        raise ParamsError(f"data.name: unknown dataset {dataset!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[dataset]


def raw_layouts(dataset: str, params: Params | None = None) -> dict[str, dict[str, list[str]]]:
    """Layout name -> role -> acceptable file names, for every raw layout ``dataset`` accepts."""
    return _family(dataset).layouts(dataset, params)


def load_interactions(
    dataset: str, raw_dir: Path, params: Params, *, checksums: Mapping[str, tuple[str, str]] | None = None
) -> pd.DataFrame:
    """Read ``dataset``'s raw files in ``raw_dir`` into the normalized interactions table.

    The files are first checked by ``integrity.check_raw_files`` against the fetch record and the
    pinned checksums (``checksums`` replaces ``assets.fetch.CHECKSUMS``, for tests). Columns and
    dtypes are exactly ``assets.schema.columns_for(dataset)``; rows are sorted stably by
    (timestamp, user_id, item_id) with a fresh RangeIndex; ``label`` follows
    ``data.label_rules.<dataset>``.
    """
    if checksums is None:
        from assets.fetch import CHECKSUMS as checksums  # assets.fetch imports this package

    raw_dir = Path(raw_dir)
    _, files = locate(raw_dir, raw_layouts(dataset, params), dataset)
    check_raw_files(raw_dir, files.values(), dataset, checksums)
    load: Callable[[str, Path, Params], pd.DataFrame] = _family(dataset).load
    return load(dataset, raw_dir, params)
