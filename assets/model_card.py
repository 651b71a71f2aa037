"""The model card of the served CTR checkpoint: what it was trained on, how well it does, where it
should and should not be used.

The bento stage writes it next to registration.json and into the registered BentoML model, and the
service returns it from ``/metadata``. Every figure comes from the served variant's own outputs, so the
bento stage depends on nothing but that variant, the split and the features (evaluate, which scores
every method, is not upstream of it): valid/test AUC and LogLoss of each trained seed from its
predictions.parquet, and the test AUC per long-tail segment (``models.metrics``: the same definition
as evaluate's Table 6, ``evaluate.longtail_share`` of training interactions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from assets.runs import PREDICTIONS
from assets.tables import read_table
from llm4ctr.errors import DataError
from models.metrics import SEGMENT_TITLES

SCORED_SPLITS = ("valid", "test")
METRICS = ("valid_auc", "valid_logloss", "test_auc", "test_logloss")


def seed_figures(variant_dir: Path, split_dir: Path, longtail_share: float) -> dict[int, dict[str, Any]]:
    """Per trained seed: valid/test AUC and LogLoss, and ``segments`` (test AUC and rows per long-tail
    segment), from the variant's predictions.parquet; DataError naming the file when a seed's
    predictions do not cover a split."""
    from models.metrics import auc, logloss, longtail_mask, segment_aucs

    preds = read_table(variant_dir / PREDICTIONS)
    train = read_table(split_dir / "train.parquet", ["user_id", "item_id"])
    test = read_table(split_dir / "test.parquet", ["user_id", "item_id", "label"])
    labels = {
        "valid": read_table(split_dir / "valid.parquet", ["label"])["label"].to_numpy(np.float64),
        "test": test["label"].to_numpy(np.float64),
    }
    lt_user = longtail_mask(train["user_id"].value_counts(), test["user_id"], longtail_share)
    lt_item = longtail_mask(train["item_id"].value_counts(), test["item_id"], longtail_share)
    figures: dict[int, dict[str, Any]] = {}
    for seed, group in preds.groupby("seed", sort=True):
        row: dict[str, Any] = {}
        for split in SCORED_SPLITS:
            probs = group[group["split"] == split].sort_values("row")["prob"].to_numpy(np.float64)
            if len(probs) != len(labels[split]):
                raise DataError(
                    f"{variant_dir / PREDICTIONS}: {len(probs)} {split} predictions for seed {seed}, "
                    f"but the {split} split has {len(labels[split])} rows"
                )
            row[f"{split}_auc"] = round(auc(labels[split], probs), 6)
            row[f"{split}_logloss"] = round(logloss(labels[split], probs), 6)
        row["segments"] = segment_aucs(labels["test"], probs, lt_user, lt_item)
        figures[int(seed)] = row
    return figures


def over_seeds(figures: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of each metric, and the mean segment AUC, over the seeds."""
    out: dict[str, Any] = {"seeds": sorted(figures)}
    for key in METRICS:
        values = [f[key] for f in figures.values()]
        out[key] = {"mean": round(float(np.mean(values)), 6), "std": round(float(np.std(values)), 6)}
    out["segments"] = {}
    for name in SEGMENT_TITLES:
        finite = [f["segments"][name]["auc"] for f in figures.values() if not np.isnan(f["segments"][name]["auc"])]
        out["segments"][name] = round(float(np.mean(finite)), 6) if finite else None
    return out


def render(facts: dict[str, Any]) -> str:
    """The card as markdown. ``facts``: tag, dataset, stage, variant, seed, seed_rule, checkpoint,
    architecture, fields, lineage, split (the split's summary.json), label_rule, longtail_share,
    figures (:func:`seed_figures`), summary (:func:`over_seeds`)."""
    seed, figures, summary, split = facts["seed"], facts["figures"], facts["summary"], facts["split"]
    served = figures[seed]
    n_seeds = len(figures)
    rule = facts["label_rule"]
    fields = ", ".join(f"`{f['name']}` ({f['kind']})" for f in facts["fields"])
    lines = [
        f"# Model card: `{facts['tag']}`",
        "",
        "Click-through-rate model of llm4ctr's CTR-only path: it gives the probability that a user likes an "
        "item from the record of the pair (user and item ids, the user's and the item's fields), without any "
        "text or language model at serving time.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| BentoML tag | `{facts['tag']}` |",
        f"| trained by | stage `{facts['stage']}`, variant `{facts['variant']}` (`{facts['checkpoint']}`) |",
        f"| architecture | `{facts['architecture']}` |",
        f"| served seed | {seed}: {facts['seed_rule']} |",
        f"| params digest | `{facts['lineage']['params_digest']}` (the params the checkpoint was trained under) |",
        f"| data md5 | `{facts['lineage']['data_md5']}` (data.dvc) |",
        f"| record fields | {fields} |",
        "",
        "## Data",
        "",
        f"Dataset `{facts['dataset']}`, split method `{split['method']}` (artifacts/split/{facts['dataset']}/"
        f"summary.json). Label: rating {rule['op']} {rule['threshold']} is a positive (1), any other rating 0.",
        "",
        "| split | rows | users | items | positive rate | cold users | cold items |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("train", *SCORED_SPLITS):
        s = split["splits"][name]
        lines.append(
            f"| {name} | {s['rows']:,} | {s['users']:,} | {s['items']:,} | {s['positive_rate']:.3f} | "
            f"{s['cold_user_share']:.2%} | {s['cold_item_share']:.2%} |"
        )
    lines += [
        "",
        "## Metrics",
        "",
        "| | valid AUC | valid LogLoss | test AUC | test LogLoss |",
        "|---|---|---|---|---|",
        f"| served seed {seed} | " + " | ".join(f"{served[k]:.4f}" for k in METRICS) + " |",
        f"| mean ± std over {n_seeds} seed{'s' if n_seeds > 1 else ''} ({', '.join(map(str, summary['seeds']))}) | "
        + " | ".join(f"{summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}" for k in METRICS)
        + " |",
        "",
        f"Long-tail segments: a long-tail user (item) is one of the least frequent users (items) that together "
        f"hold {facts['longtail_share']:.0%} of the training interactions (evaluate.longtail_share); unseen ones "
        "are long-tail. Test AUC per segment:",
        "",
        "| segment | test rows | AUC, served seed | AUC, mean over seeds |",
        "|---|---|---|---|",
    ]
    for name, title in SEGMENT_TITLES.items():
        own, mean = served["segments"][name], summary["segments"][name]
        lines.append(f"| {title} | {own['n']:,} | {_auc(own['auc'])} | {_auc(mean)} |")
    train = split["splits"]["train"]
    lines += [
        "",
        "## Intended use",
        "",
        f"Scoring or ranking candidate items for users of `{facts['dataset']}`-like data: research on CTR "
        "methods, and the reference deployment of this pipeline (serving, prediction log, drift monitoring).",
        "",
        "## Limits",
        "",
        f"- Small data: {train['rows']:,} training rows from {train['users']:,} users and {train['items']:,} "
        "items; a single seed's figures vary with the seed. "
        + (
            "Compare models by the mean ± std over seeds above."
            if n_seeds > 1
            else "One seed was trained, so the spread over seeds is unknown (train.seeds lists the seeds)."
        ),
        "- Labels are thresholded ratings, not clicks: the probability is that of a high rating given that the "
        "user rated the item (explicit feedback, with its selection bias), not of a click on an impression.",
        "- CTR-only: the served model reads ids and categorical/numeric fields only; the project's "
        "language-model methods (ClickPrompt with its PLM, GPT4SM, PALR, ...) are not what this service runs.",
        "- Cold users and items, and field values never seen in training, score through the out-of-vocabulary "
        "embedding: their predictions fall back on the record's other fields and are not personalized "
        "(the cold shares above show how rare they were in evaluation).",
        "- Long-tail users and items have few training interactions: read their AUC in the segment table "
        "before relying on the model for them.",
    ]
    if split["method"] == "random":
        lines.append(
            "- The split is random, not by time: test rows come from the same period as training, so the test "
            "figures are optimistic for future traffic; the drift stage compares served traffic with training."
        )
    lines.append(
        "- Valid only for the population it was trained on; probabilities are not calibrated for other datasets."
    )
    return "\n".join(lines) + "\n"


def _auc(value: float | None) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.4f}"
