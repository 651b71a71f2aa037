"""What each knowledge source knows about a movie from its title alone (GitHub issue 17).

    python bench/knowledge_probe.py [--sources SmolLM2-135M-Instruct gemma-3-270m ...] [--folds 5]

For every source (a registry name, local folder or hub name) the frozen model embeds each ML-100K
item's *title only* (mean-pooled last layer, models/hidden_states.py, the pipeline's own encoder code):
the fields the CTR model already has (genres, year) are left out of the text. Linear probes on those
vectors, scored on held-out items (K-fold over items, seeded), answer three questions:

- genres: macro AUC over the genres with at least 20 items;
- decade of release: macro AUC over the decades with at least 20 items (one-vs-rest; most ML-100K
  movies are from the 1990s, so accuracy would only restate the majority class);
- liked share (items with at least 10 ratings: the share of ratings > 3): R^2 of a ridge regression
  on the CTR features alone (genre one-hot, year), then with a second ridge regression on the title
  vector fitted to what the first leaves (held-out predictions of both). The gain is knowledge about
  the movie that the features do not already carry: what an LLM could add to a cold item's score.

A non-LLM reference runs through the same probes: TF-IDF of the title's words. Each probe is a
standardised ridge regression whose strength is the best of one grid on the same folds, for every
source alike (so each figure is slightly optimistic, equally for all).

Cost per source: parameters, size on disk, and the wall seconds to embed the whole catalogue with the
LEARN item text (what `hidden_states_item` computes), measured here without the cache. Figures go to
stdout and bench/results/cold_start/probe.json (read by ``bench_cold_start.py report``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets.pretrained import fingerprint, resolve  # noqa: E402
from assets.prompts import field_texts, load_config  # noqa: E402
from assets.split import load_splits  # noqa: E402
from llm4ctr.atomic import write_text  # noqa: E402
from llm4ctr.params import load_params  # noqa: E402
from models.hidden_states import Encoder, cache_states, read_states  # noqa: E402

OUT = ROOT / "bench" / "results" / "cold_start" / "probe.json"
SOURCES = ("SmolLM2-135M-Instruct", "gemma-3-270m", "all-mpnet-base-v2", "all-MiniLM-L6-v2")
TFIDF = "title words (TF-IDF)"
MIN_GENRE_ITEMS, MIN_RATINGS = 20, 10
ALPHA_GRID = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def catalogue(root: Path, dataset: str) -> tuple[pd.DataFrame, pd.Series]:
    """One row per item (title, genres, year) and each item's liked share over all its ratings."""
    rows = pd.concat(load_splits(root, dataset).values(), ignore_index=True)
    items = rows.drop_duplicates("item_id").set_index("item_id")[["title", "genres", "year"]].sort_index()
    stats = rows.groupby("item_id")["label"].agg(["mean", "size"])
    liked = stats.loc[stats["size"] >= MIN_RATINGS, "mean"]
    return items, liked


def embed(model: str, texts: list[str], store: Path, template_id: str) -> tuple[np.ndarray, float]:
    """Mean-pooled frozen states of ``texts`` (cached in ``store``) and the seconds computing them took."""
    folder = resolve(model)
    encoder = Encoder(folder, fingerprint(folder), "mean", 128, "cpu", "auto")
    run = cache_states(encoder, texts, template_id, store, batch_size=32, shard_size=512, progress=False)
    return read_states(run).numpy(), run.compute_seconds


def _folds(n: int, k: int, seed: int = 2024) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    return list(KFold(k, shuffle=True, random_state=seed).split(np.arange(n)))


def _cv_predict(x: np.ndarray, y: np.ndarray, folds, alpha: float) -> np.ndarray:
    """Held-out predictions of a standardised ridge regression (one or several targets) over ``folds``."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.zeros(y.shape, dtype=float)
    for train, test in folds:
        out[test] = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[train], y[train]).predict(x[test])
    return out


def probe(x: np.ndarray, items: pd.DataFrame, liked: pd.Series, features: np.ndarray, k: int) -> dict:
    """Genre and decade macro AUC and liked-share R^2 of vectors ``x`` (rows in ``items`` order).

    Every probe is a ridge regression (closed form, several targets at once) whose scores are ranked per
    genre / decade (AUC); each takes the best ``ALPHA_GRID`` value.
    """
    from sklearn.metrics import r2_score, roc_auc_score

    folds = _folds(len(items), k)
    genres = items["genres"].fillna("").str.get_dummies(sep="|")
    genres = genres.loc[:, genres.sum() >= MIN_GENRE_ITEMS].to_numpy(float)
    genre_auc = max(
        np.mean([roc_auc_score(genres[:, g], scores[:, g]) for g in range(genres.shape[1])])
        for scores in (_cv_predict(x, genres, folds, a) for a in ALPHA_GRID)
    )

    known = items["year"].notna().to_numpy()
    decades = pd.get_dummies(items["year"][known].astype(int) // 10 * 10)
    decades = decades.loc[:, decades.sum() >= MIN_GENRE_ITEMS].to_numpy(float)
    dfolds = _folds(int(known.sum()), k)
    decade_auc = max(
        np.mean([roc_auc_score(decades[:, d], scores[:, d]) for d in range(decades.shape[1])])
        for scores in (_cv_predict(x[known], decades, dfolds, a) for a in ALPHA_GRID)
    )

    rated = items.index.isin(liked.index)
    y = liked.loc[items.index[rated]].to_numpy()
    lfolds = _folds(int(rated.sum()), k)

    def best(z: np.ndarray, target: np.ndarray) -> np.ndarray:  # held-out predictions at the best alpha
        return max((_cv_predict(z, target, lfolds, a) for a in ALPHA_GRID), key=lambda p: r2_score(target, p))

    from_features = best(features[rated], y)
    from_title = best(x[rated], y - from_features)  # what the title adds to what the features explain
    return {
        "genre_macro_auc": round(float(genre_auc), 4),
        "genres": int(genres.shape[1]),
        "decade_macro_auc": round(float(decade_auc), 4),
        "decades": int(decades.shape[1]),
        "liked_r2_features": round(float(r2_score(y, from_features)), 4),
        "liked_r2_features_title": round(float(r2_score(y, from_features + from_title)), 4),
        "liked_items": int(rated.sum()),
    }


def ctr_features(items: pd.DataFrame) -> np.ndarray:
    """What the CTR model knows of an item besides its ID: genre one-hot and year (missing: the median)."""
    genres = items["genres"].fillna("").str.get_dummies(sep="|").to_numpy(float)
    year = items["year"].astype(float)
    return np.hstack([genres, year.fillna(year.median()).to_numpy()[:, None]])


def model_size(model: str) -> dict:
    """Parameters (millions) and size on disk (MB) of a resolved model folder."""
    import torch
    from transformers import AutoConfig, AutoModel

    folder = Path(resolve(model))
    with torch.device("meta"):  # the parameter count without loading the weights
        params = AutoModel.from_config(AutoConfig.from_pretrained(folder)).num_parameters()
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"params_m": round(params / 1e6, 1), "disk_mb": round(disk / 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", nargs="*", default=list(SOURCES))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer

    params = load_params(args.root / "params.yaml")
    items, liked = catalogue(args.root, params.get_path("data.name"))
    features = ctr_features(items)
    titles = items["title"].fillna("").astype(str).tolist()
    learn_texts = field_texts(items.reset_index(), load_config(params, args.root), "item", "item_id")["text"].tolist()
    store = args.root / "artifacts" / ".work" / "bench-cold-start" / "probe-store"
    results = {"items": len(items), "folds": args.folds, "sources": {}}
    tfidf = TfidfVectorizer(min_df=2).fit_transform(titles).toarray()
    results["sources"][TFIDF] = {**probe(tfidf, items, liked, features, args.folds), "dim": int(tfidf.shape[1])}
    print(TFIDF, results["sources"][TFIDF], flush=True)
    for source in args.sources:
        vectors, _ = embed(source, titles, store, "probe-title-v1")
        with tempfile.TemporaryDirectory() as scratch:  # uncached: the cost of a first run
            started = time.perf_counter()
            embed(source, learn_texts, Path(scratch), "learn-item-v1")
            catalogue_seconds = time.perf_counter() - started
        results["sources"][source] = {
            **probe(vectors, items, liked, features, args.folds),
            "dim": int(vectors.shape[1]),
            **model_size(source),
            "catalogue_seconds": round(catalogue_seconds, 1),
        }
        print(source, results["sources"][source], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_text(OUT, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
