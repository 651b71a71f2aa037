"""LEARN's result tables (GitHub issue 7) from the artifacts the LEARN stages and `train` wrote.

    python bench/bench_learn.py [--root .] [--dataset ml-100k] [--ranker dcnv2_learn ...]

* Retrieval: every tower under artifacts/learn_tower/<ds>/ (mean ± std over seeds of test Recall@10
  and NDCG@10, overall and for long-tail / cold target items) plus a popularity reference scored on
  the very same queries (models/learn/retrieval.py; candidates = items the user has not seen in training).
* Ranking: the zoo baseline (artifacts/train/<ds>/<backbone>/) against each LEARN ranker
  (artifacts/learn/<ds>/<variant>/): test AUC overall, in the 2x2 long-tail segments
  (models.metrics.longtail_mask / segment_aucs, ``evaluate.longtail_share``), on rows of cold items
  (not in the training split) and by the item's training-interaction count; mean ± std over seeds,
  and the mean per-seed difference to the baseline.

The tables go to stdout and into docs/RESULTS_LEARN.md between markers (text around them is kept);
all figures also to bench/results/learn-<ds>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets.learn import STAGE as LEARN_STAGE  # noqa: E402
from assets.learn import TOWER_STAGE, Catalogue, interactions, training_sequences  # noqa: E402
from assets.runs import PREDICTIONS  # noqa: E402
from assets.split import load_splits  # noqa: E402
from llm4ctr.atomic import replace_block, write_text  # noqa: E402
from llm4ctr.params import load_params  # noqa: E402
from llm4ctr.paths import artifact_dir  # noqa: E402

RESULTS = ROOT / "docs" / "RESULTS_LEARN.md"
RETRIEVAL_KEYS = ["recall@10", "ndcg@10", "lt_item_recall@10", "lt_item_ndcg@10", "cold_item_recall@10"]


def _ms(values: list[float]) -> str:
    values = [v for v in values if not np.isnan(v)]
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if values else "-"


def popularity(params, root: Path, dataset: str) -> dict[str, float]:
    """Recall/NDCG@10 of ranking by training popularity, on the towers' test queries."""
    import torch

    from models.learn.retrieval import recall_ndcg, target_ranks
    from models.learn.train_tower import Queries, seen_matrix

    splits = load_splits(root, dataset)
    catalogue = Catalogue.of(splits)
    seqs = training_sequences(params, splits, catalogue)
    test = interactions(params, splits["test"])
    queries = Queries.build(
        seqs,
        test["user_id"].astype(str),
        catalogue.item_indices(test),
        test["timestamp"],
        catalogue.user_rows,
        int(params.get_path("learn.tower_train.history_len")),
    )
    counts = np.bincount(np.concatenate(list(seqs.items.values())), minlength=len(catalogue.items) + 1)
    item_emb = torch.as_tensor(counts, dtype=torch.float32).unsqueeze(1)
    ranks = target_ranks(
        torch.ones(len(queries.targets), 1),
        item_emb,
        queries.targets,
        seen_matrix(seqs, catalogue.user_rows, len(catalogue.items)),
        queries.users,
    )
    return recall_ndcg(ranks, 10)


def retrieval_table(params, root: Path, dataset: str) -> tuple[str, dict]:
    rows, figures = [], {}
    for path in sorted(artifact_dir(root, TOWER_STAGE, dataset).glob("*/retrieval.json")):
        report = json.loads(path.read_text())
        seeds = report["seeds"].values()
        figures[report["tower"]] = {k: [s["test"][k] for s in seeds] for k in RETRIEVAL_KEYS}
        figures[report["tower"]]["train_seconds"] = [s["train_seconds"] for s in seeds]
        figures[report["tower"]]["best_epoch"] = [s["best_epoch"] for s in seeds]
        rows.append(
            f"| {report['tower']} | "
            + " | ".join(_ms(figures[report["tower"]][k]) for k in RETRIEVAL_KEYS)
            + f" | {len(report['seeds'])} | {np.mean(figures[report['tower']]['train_seconds']):.0f} |"
        )
    pop = popularity(params, root, dataset)
    figures["popularity"] = pop
    rows.append(f"| popularity | {pop['recall@10']:.4f} | {pop['ndcg@10']:.4f} | | | | - | - |")
    head = (
        "| tower | Recall@10 | NDCG@10 | LT-item Recall@10 | LT-item NDCG@10 | cold-item Recall@10 | seeds | "
        "train s/seed |\n|---|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(rows) + "\n", figures


def ranking_table(params, root: Path, dataset: str, variants: list[str]) -> tuple[str, dict]:
    from assets.evaluate import TestSet
    from models.metrics import SEGMENTS, auc, segment_aucs

    test_set = TestSet.load(params, root)
    y, lt_user, lt_item = test_set.y, test_set.lt_user, test_set.lt_item
    columns = {"overall": np.ones(len(y), dtype=bool)}
    columns.update({k: (lt_user == u) & (lt_item == i) for k, (u, i) in SEGMENTS.items()})
    columns.update({f"item {label}": rows for label, rows in test_set.item_buckets.items()})

    backbones = sorted({v.partition("_")[0] for v in variants})
    models = {b: artifact_dir(root, "train", dataset) / b / PREDICTIONS for b in backbones}
    models.update({v: artifact_dir(root, LEARN_STAGE, dataset) / v / PREDICTIONS for v in variants})
    figures: dict = {"rows": {k: int(m.sum()) for k, m in columns.items()}, "models": {}}
    for name, path in models.items():
        if not path.is_file():
            print(f"skipping {name}: {path} not found", file=sys.stderr)
            continue
        per_seed = test_set.seed_probs(path)
        figures["models"][name] = {
            col: {
                seed: (segment_aucs(y, p, lt_user, lt_item)[col]["auc"] if col in SEGMENTS else auc(y[m], p[m]))
                for seed, p in per_seed.items()
            }
            for col, m in columns.items()
        }
    lines = [
        "| model | " + " | ".join(f"{c} (n={figures['rows'][c]})" for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, cols in figures["models"].items():
        lines.append(f"| {name} | " + " | ".join(_ms(list(cols[c].values())) for c in columns) + " |")
    for variant in variants:
        base = figures["models"].get(variant.partition("_")[0])
        if variant not in figures["models"] or base is None:
            continue
        diffs = []
        for c in columns:
            common = sorted(set(base[c]) & set(figures["models"][variant][c]))
            diffs.append(_ms([figures["models"][variant][c][s] - base[c][s] for s in common]))
        lines.append(f"| Δ {variant} − {variant.partition('_')[0]} (paired by seed) | " + " | ".join(diffs) + " |")
    return "\n".join(lines) + "\n", figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--dataset", default=None)
    parser.add_argument(
        "--ranker", nargs="*", default=None, help="LEARN ranker variants (default learn.ranker.variants)"
    )
    args = parser.parse_args()
    params = load_params(args.params, {"data.name": args.dataset} if args.dataset else {})
    dataset = params.get_path("data.name")
    variants = args.ranker or list(params.get_path("learn.ranker.variants"))
    retrieval_md, retrieval = retrieval_table(params, args.root, dataset)
    ranking_md, ranking = ranking_table(params, args.root, dataset, variants)
    block = (
        f"### {dataset}: retrieval on the test split (held-out interactions; history = training items before each)\n\n"
        f"{retrieval_md}\n### {dataset}: ranking, test AUC (mean ± std over seeds)\n\n{ranking_md}"
    )
    print(block)
    out = ROOT / "bench" / "results" / f"learn-{dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps({"retrieval": retrieval, "ranking": ranking}, indent=2, default=float))
    replace_block(RESULTS, "bench_learn", block)


if __name__ == "__main__":
    main()
