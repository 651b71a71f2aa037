"""Feature encoding: turn the normalized interactions table into integer id arrays for CTR models.

A :class:`FeatureSpec` says which columns become model fields and how:

* ``categorical`` — one value per row, one embedding per value (ids, gender, zip, ...);
* ``multi`` — several ``'|'``-separated values per row, padded to ``max_len`` and mean-pooled by the
  embedding layer (MovieLens genres, Amazon category paths);
* ``numeric`` — a number bucketized with quantile bin edges fit on the training split (age, year).

:class:`FeatureEncoder` learns vocabularies and bin edges from the TRAINING split only, so validation
and test rows see exactly what a served request would see. Index 0 is padding, index 1 is the
out-of-vocabulary (OOV) id: unseen values, values rarer than ``min_count`` and missing values all map
to 1, so transforming never fails on new data. The fitted state is plain JSON (``save``/``load``),
which the serving side can read without pandas pickles.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from llm4ctr.atomic import write_text
from llm4ctr.errors import DataError

PAD, OOV = 0, 1
FIRST_ID = 2  # the first id of a real vocabulary entry
SEPARATOR = "|"
ENCODER_FILE = "encoder.json"

Kind = Literal["categorical", "multi", "numeric"]

# How default_spec treats known column names. Everything not listed is ignored.
# title is left out on purpose: it is (almost) one value per item, so as an id it only duplicates
# item_id; its text is the PLM's input (ClickPrompt), not a CTR id feature.
# rating/label/timestamp are targets or split keys, never features.
_CATEGORICAL = (
    "user_id", "item_id", "scenario",
    "gender", "occupation", "zip",             # MovieLens
    "location", "author", "publisher",         # BookCrossing
    "brand", "price",                          # Amazon (price is free text, often a range)
)  # fmt: skip
_MULTI = ("genres", "category")
_NUMERIC = ("age", "year")


@dataclass(frozen=True)
class Field:
    """One model field: the column it reads and how it is encoded.

    ``max_len`` (multi only): values kept per row; ``None`` = the longest row seen in training.
    ``n_bins`` (numeric only): quantile buckets fit on training; duplicate edges are merged.
    """

    name: str
    kind: Kind = "categorical"
    max_len: int | None = None
    n_bins: int = 10


@dataclass(frozen=True)
class FeatureSpec:
    """The ordered fields a model sees; the order is the field order inside every model."""

    fields: tuple[Field, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def to_dict(self) -> dict:
        return {"fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        return cls(tuple(Field(**f) for f in data["fields"]))


def default_spec(dataset_columns, n_bins: int = 10) -> FeatureSpec:
    """The spec for a normalized table with ``dataset_columns``, chosen by column name.

    Works for every dataset in ``assets/schema.py``: ids, scenario and short categorical attributes
    become categorical fields, ``genres``/``category`` multi-valued, ``age``/``year`` bucketized.
    Free text (``title``) and the target/time columns are not fields (see ``_CATEGORICAL``).
    """
    columns = list(dataset_columns)
    fields = []
    for col in columns:
        if col in _CATEGORICAL:
            fields.append(Field(col, "categorical"))
        elif col in _MULTI:
            fields.append(Field(col, "multi"))
        elif col in _NUMERIC:
            fields.append(Field(col, "numeric", n_bins=n_bins))
    return FeatureSpec(tuple(fields))


def _tokens(values: pd.Series) -> pd.Series:
    """Values as strings (nullable); integral floats print without '.0' so 25.0 and 25 agree."""
    if pd.api.types.is_float_dtype(values):
        finite = values.dropna()
        if (finite == np.floor(finite)).all():
            values = values.astype("Int64")
    return values.astype("string").str.strip()


def _split(values: pd.Series) -> tuple[np.ndarray, list[list[str]]]:
    """Factorize a multi-valued column: row codes into a list of token lists of its distinct values."""
    codes, uniques = pd.factorize(_tokens(values), use_na_sentinel=True)
    lists = [[t.strip() for t in str(u).split(SEPARATOR) if t.strip()] for u in uniques]
    return codes, lists


class FeatureEncoder:
    """Vocabularies and bin edges fit on training data; transforms frames into int64 arrays.

    Build one with :meth:`fit` (from data) or :meth:`load` (from a saved directory).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        vocabs: dict[str, list[str]],
        edges: dict[str, list[float]],
        max_lens: dict[str, int],
        min_count: int,
    ):
        self.spec = spec
        self.vocabs = vocabs
        self.edges = edges
        self.max_lens = max_lens
        self.min_count = min_count
        self._index = {name: pd.Index(vocab) for name, vocab in vocabs.items()}

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, train_df: pd.DataFrame, spec: FeatureSpec, min_count: int = 1) -> FeatureEncoder:
        """Learn vocabularies (values seen at least ``min_count`` times) and bin edges on ``train_df``."""
        missing = [name for name in spec.names if name not in train_df.columns]
        if missing:
            raise DataError(f"training table lacks feature column(s) {missing}; has {list(train_df.columns)}")
        vocabs, edges, max_lens = {}, {}, {}
        for field in spec.fields:
            column = train_df[field.name]
            if field.kind == "numeric":
                edges[field.name] = _quantile_edges(column, field.n_bins)
            elif field.kind == "multi":
                codes, lists = _split(column)
                row_counts = np.bincount(codes[codes >= 0], minlength=len(lists))
                counts: Counter = Counter()
                for tokens, n in zip(lists, row_counts):
                    for token in tokens:
                        counts[token] += int(n)
                vocabs[field.name] = _vocab(counts, min_count)
                longest = max((len(t) for t in lists), default=1)
                max_lens[field.name] = max(1, field.max_len or longest)
            else:
                counts = Counter(_tokens(column).dropna().value_counts().to_dict())
                vocabs[field.name] = _vocab(counts, min_count)
        return cls(spec, vocabs, edges, max_lens, min_count)

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Embedding table size per field, in field order (padding and OOV included)."""
        sizes = {}
        for field in self.spec.fields:
            if field.kind == "numeric":
                sizes[field.name] = FIRST_ID + len(self.edges[field.name]) + 1
            else:
                sizes[field.name] = FIRST_ID + len(self.vocabs[field.name])
        return sizes

    # ------------------------------------------------------------------ transforming
    def transform(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Encode ``df``: one int64 array per field ([n], or [n, max_len] for multi-valued fields).

        Unknown, rare and missing values become OOV (1); a missing feature column is all OOV. When
        ``df`` has a ``label`` column it is added as ``arrays["label"]`` (float32), ready for training.
        """
        n = len(df)
        arrays: dict[str, np.ndarray] = {}
        for field in self.spec.fields:
            if field.name not in df.columns:
                shape = (n, self.max_lens[field.name]) if field.kind == "multi" else (n,)
                arrays[field.name] = _oov(shape, field.kind)
            elif field.kind == "numeric":
                arrays[field.name] = self._bucketize(field.name, df[field.name])
            elif field.kind == "multi":
                arrays[field.name] = self._encode_multi(field.name, df[field.name])
            else:
                arrays[field.name] = self._lookup(field.name, _tokens(df[field.name]).to_numpy(dtype=object))
        if "label" in df.columns:
            arrays["label"] = df["label"].to_numpy(dtype=np.float32)
        return arrays

    def _lookup(self, name: str, tokens: np.ndarray) -> np.ndarray:
        positions = self._index[name].get_indexer(pd.Index(tokens, dtype=object))
        return np.where(positions >= 0, positions + FIRST_ID, OOV).astype(np.int64)

    def _bucketize(self, name: str, values: pd.Series) -> np.ndarray:
        numbers = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        buckets = np.searchsorted(np.asarray(self.edges[name], dtype=np.float64), numbers, side="right")
        return np.where(np.isnan(numbers), OOV, buckets + FIRST_ID).astype(np.int64)

    def _encode_multi(self, name: str, values: pd.Series) -> np.ndarray:
        """Encode each DISTINCT value once, then gather by row: fast on million-row tables."""
        max_len = self.max_lens[name]
        codes, lists = _split(values)
        table = np.full((len(lists) + 1, max_len), PAD, dtype=np.int64)
        table[-1, 0] = OOV  # the row for missing values (code -1)
        for row, tokens in enumerate(lists):
            ids = self._lookup(name, np.asarray(tokens[:max_len], dtype=object)) if tokens else [OOV]
            table[row, : len(ids)] = ids
        return table[codes]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "min_count": self.min_count,
            "vocabs": self.vocabs,
            "edges": self.edges,
            "max_lens": self.max_lens,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``encoder.json`` into ``directory`` (atomically) and return its path."""
        path = Path(directory) / ENCODER_FILE
        write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> FeatureEncoder:
        """Read an encoder saved by :meth:`save`."""
        path = Path(directory) / ENCODER_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                FeatureSpec.from_dict(data["spec"]), data["vocabs"], data["edges"], data["max_lens"], data["min_count"]
            )
        except FileNotFoundError:
            raise DataError(f"{path}: feature encoder not found (fit and save one first)") from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a valid feature encoder file ({exc})") from None


def _vocab(counts: Counter, min_count: int) -> list[str]:
    """Values seen at least ``min_count`` times, sorted so the ids do not depend on row order."""
    return sorted(token for token, n in counts.items() if n >= min_count)


def _quantile_edges(values: pd.Series, n_bins: int) -> list[float]:
    """Interior quantile edges (deduplicated) splitting the training values into ``n_bins`` buckets."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64").dropna().to_numpy()
    if numbers.size == 0 or n_bins < 2:
        return []
    quantiles = np.quantile(numbers, np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(q) for q in np.unique(quantiles)]


def _oov(shape: tuple[int, ...], kind: Kind) -> np.ndarray:
    """All-OOV array for a feature column the frame does not have (multi: OOV in the first slot)."""
    out = np.zeros(shape, dtype=np.int64)
    if kind == "multi":
        out[:, 0] = OOV
    else:
        out[:] = OOV
    return out
