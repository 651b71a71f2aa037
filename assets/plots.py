"""The PNG figures the stages write next to their tables, for the Dagster asset pages and the docs.

Every figure has one line per model (or per seed), the models ranked by overall AUC, 20 colours and
then the same colours dashed, the legend outside the axes, so a 25-model zoo stays readable:

* :func:`plot_by_bucket`: test AUC per bucket of rows (long-tail segment, item training count);
* :func:`plot_curves`: ROC or calibration curves from evaluate's per-model point frames;
* :func:`plot_training`: a stage instance's training curves, one panel per metric, one line per seed.

matplotlib draws without a display (Agg) and is imported only when a figure is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _style(plt, rank: int) -> dict[str, Any]:
    return {"color": plt.cm.tab20(rank % 20), "linestyle": "-" if rank < 20 else "--"}


def _ranked(results: Mapping[str, dict]) -> list[tuple[str, dict]]:
    """Models best overall AUC first (a model without an AUC last)."""
    return sorted(results.items(), key=lambda kv: -(kv[1]["auc"] if not np.isnan(kv[1]["auc"]) else 0))


def _save(plt, figure, axis, path: Path, title: str, legend_title: str) -> None:
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title=legend_title)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def plot_by_bucket(
    results: Mapping[str, dict],
    field: str,
    rows: Mapping[str, int],
    path: Path,
    title: str,
    xlabel: str,
    names: Mapping[str, str] | None = None,
) -> None:
    """Test AUC per bucket (``results[model][field][bucket]``, mean over seeds), one line per model;
    the buckets in ``rows``' order, each labelled with its test rows (``names`` renames them). A bucket
    without both labels has no AUC and leaves a gap."""
    plt = _pyplot()
    labels = list(rows)
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=100)
    for rank, (name, entry) in enumerate(_ranked(results)):
        values = [entry[field].get(label, float("nan")) for label in labels]
        axis.plot(range(len(labels)), values, marker="o", linewidth=1.2, label=f"{name} ({entry['auc']:.4f})",
                  **_style(plt, rank))  # fmt: skip
    names = names or {}
    axis.set_xticks(range(len(labels)), [f"{names.get(label, label)}\nn={rows[label]}" for label in labels])
    axis.set_xlabel(xlabel)
    axis.set_ylabel("test AUC (mean over seeds)")
    _save(plt, figure, axis, path, title, "model (overall AUC)")


def plot_curves(
    frames: Sequence[pd.DataFrame], results: Mapping[str, dict], x: str, y: str, path: Path, title: str
) -> None:
    """One curve per model from evaluate's point frames (columns ``x``, ``y``, ``model``), ranked as
    ``results``; a grey diagonal for reference (chance for ROC, perfect calibration)."""
    plt = _pyplot()
    by_model = {frame["model"].iloc[0]: frame for frame in frames}
    figure, axis = plt.subplots(figsize=(9, 6), dpi=100)
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    for rank, (name, entry) in enumerate((n, e) for n, e in _ranked(results) if n in by_model):
        frame = by_model[name]
        axis.plot(frame[x], frame[y], linewidth=1.1, label=f"{name} ({entry['auc']:.4f})", **_style(plt, rank))
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    _save(plt, figure, axis, path, title, "model (test AUC), first seed")


def plot_training(histories: Mapping[int, list[dict]], metrics: Sequence[str], step: str, path: Path, title: str):
    """A panel per metric (``metrics``, e.g. train_loss, valid_auc), a line per seed over ``step``."""
    plt = _pyplot()
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), dpi=100, squeeze=False)
    for axis, metric in zip(axes.flat, metrics, strict=False):
        for rank, (seed, history) in enumerate(sorted(histories.items())):
            points = [(row.get(step, index), row[metric]) for index, row in enumerate(history) if metric in row]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="." if len(xs) < 40 else None, label=f"seed {seed}", **_style(plt, rank))
        axis.set_title(metric, fontsize=10)
        axis.set_xlabel(step)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
