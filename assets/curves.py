"""Training curves of a stage instance, per seed, written through DVCLive for `dvc plots show`.

A training loop keeps its history (the CTR trainer and the LEARN tower one row per epoch, PA-MLM one
per ``log_every`` steps); the stage hands each seed's history to :class:`Curves`, which rewrites the
instance's folder ``artifacts/curves/<stage>/<dataset>/<variant>/`` atomically with every seed so far:

    plots/metrics/seed<k>/<metric>.tsv   one curve per metric and seed (columns step, <metric>): a
                                         stage-level ``plots`` output in dvc.yaml, x = step
    metrics.json                         the last value of each curve (a stage-level ``metrics`` output)
    curves.png                           every curve drawn, a panel per metric and a line per seed (an
                                         image ``plots`` output; the Dagster asset shows it inline)

The x axis is the row's epoch or step. Rewriting from the whole history after every seed keeps the
folder exact when a seed resumes from its checkpoint (the trainer carries its history across resumes).
"""

from __future__ import annotations

import math
from pathlib import Path

from llm4ctr.atomic import atomic_dir

CURVES = "artifacts/curves/{stage}/{dataset}/{variant}"
PLOTS = "plots/metrics"
METRICS = "metrics.json"
FIGURE = "curves.png"
STEP_KEYS = ("epoch", "step")  # the x axis: whichever a loop's history rows carry
NOT_CURVES = ("seconds", "queries", "dropped")  # wall time and the tower's query counts: not curves


def curves_dir(root: Path, stage: str, dataset: str, variant: str) -> Path:
    return Path(root) / CURVES.format(stage=stage, dataset=dataset, variant=variant)


class Curves:
    """The curves of one stage instance; :meth:`add` a seed's history, the folder follows."""

    def __init__(self, root: Path, stage: str, dataset: str, variant: str):
        self.folder = curves_dir(root, stage, dataset, variant)
        self.title = f"{stage} {variant} on {dataset}"
        self.histories: dict[int, list[dict]] = {}

    def add(self, seed: int, history: list[dict]) -> None:
        """Record ``seed``'s history rows and rewrite the folder with every seed added so far."""
        self.histories[int(seed)] = list(history)
        self.write()

    def write(self) -> None:
        from dvclive import Live

        from assets.plots import plot_training

        names: dict[str, None] = {}  # the curves' metric names, in their first appearance order
        with atomic_dir(self.folder) as tmp:
            live = Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=False, report=None)
            for seed, rows in sorted(self.histories.items()):
                for index, row in enumerate(rows):
                    live.step = int(next((row[k] for k in STEP_KEYS if k in row), index))
                    for name, value in row.items():
                        if name in STEP_KEYS or name in NOT_CURVES or not _finite_number(value):
                            continue
                        names[name] = None
                        live.log_metric(f"seed{seed}/{name}", float(value))
            live.end()
            if names:
                rows = [row for history in self.histories.values() for row in history]
                step = next((k for k in STEP_KEYS if any(k in row for row in rows)), "row")
                plot_training(self.histories, list(names), step, tmp / FIGURE, self.title)


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
