"""Training curves through DVCLive: one TSV per metric and seed, x = the row's epoch or step, rewritten
whole when a seed's history comes again (a resumed seed), counts and wall time left out."""

from __future__ import annotations

import json
from pathlib import Path

from assets.curves import Curves


def _rows(folder: Path, seed: int, metric: str) -> list[list[str]]:
    text = (folder / "plots" / "metrics" / f"seed{seed}" / f"{metric}.tsv").read_text()
    return [line.split("\t") for line in text.splitlines()]


def test_each_seed_and_metric_is_one_curve_over_its_epochs(tmp_path: Path):
    curves = Curves(tmp_path, "train", "ml-100k", "fm")
    history = [{"epoch": 1, "train_loss": 0.6, "valid_auc": 0.70, "seconds": 2.0, "queries": 9},
               {"epoch": 2, "train_loss": 0.5, "valid_auc": float("nan"), "seconds": 2.0, "queries": 9}]  # fmt: skip
    curves.add(1, history[:1])
    curves.add(2, history)
    curves.add(1, history)  # seed 1 resumed and trained on: its whole history again, no row twice
    folder = tmp_path / "artifacts" / "curves" / "train" / "ml-100k" / "fm"
    assert _rows(folder, 1, "train_loss") == [["step", "train_loss"], ["1", "0.6"], ["2", "0.5"]]
    assert _rows(folder, 1, "valid_auc") == [["step", "valid_auc"], ["1", "0.7"]]  # NaN is no point
    assert sorted(p.name for p in (folder / "plots" / "metrics" / "seed2").iterdir()) == [
        "train_loss.tsv",
        "valid_auc.tsv",
    ]  # wall time and counts are no curves
    last = json.loads((folder / "metrics.json").read_text())
    assert last["seed1"]["train_loss"] == last["seed2"]["train_loss"] == 0.5
    figure = (folder / "curves.png").read_bytes()  # every curve drawn, for the Dagster asset page
    assert figure[:8] == b"\x89PNG\r\n\x1a\n" and len(figure) > 10_000


def test_a_history_without_epochs_is_drawn_over_its_rows(tmp_path: Path):
    curves = Curves(tmp_path, "clickprompt_pretrain", "ml-100k", "plain")
    curves.add(7, [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.5}])
    folder = tmp_path / "artifacts" / "curves" / "clickprompt_pretrain" / "ml-100k" / "plain"
    assert _rows(folder, 7, "loss") == [["step", "loss"], ["10", "3.0"], ["20", "2.5"]]
