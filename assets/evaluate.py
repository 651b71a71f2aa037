"""Stage `evaluate`: every method's test predictions -> one comparable set of figures and tables.

Reads the predictions.parquet of every variant of the scored stages (assets.registry.SCORED; the layout
of docs/CONTRACTS.md) and computes, per seed then averaged: test AUC, LogLoss, per-scenario AUC and
the ClickPrompt paper's 2x2 long-tail segment AUCs (long-tail = the least frequent users/items
holding the bottom ``evaluate.longtail_share`` of training interactions); RelaImpr against
``evaluate.base_model``. Writes artifacts/evaluate/<dataset>/: metrics.json (per model, for `dvc metrics
show/diff` and `dvc exp show`: inside the cached output, so every commit's and experiment's figures stay
readable), results.md, results.json, roc/ and calibration/ with one CSV per model for `dvc plots`. It
changes no tracked file: `llm4ctr publish results` (:func:`publish`) copies the tables into
docs/RESULTS.md and README.md, deliberately, after the run whose figures should be published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.palr_tables import collect as collect_palr
from assets.palr_tables import markdown as palr_markdown
from assets.registry import SCORED
from assets.runs import PREDICTIONS
from assets.split import load_splits, split_method
from assets.tables import preview_table, write_json
from llm4ctr.atomic import atomic_dir, replace_block, write_text
from llm4ctr.errors import DataError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir
from models.metrics import SEGMENT_TITLES

STAGE = "evaluate"
METRICS = "metrics.json"  # in the stage's output folder
RESULTS_DOC = "docs/RESULTS.md"
README = "README.md"
# test rows by their item's interactions in the training split (0: an item train never saw)
ITEM_COUNT_BUCKETS = ((0, 0, "cold (0)"), (1, 5, "1-5"), (6, 20, "6-20"), (21, 50, "21-50"), (51, None, ">50"))
ITEM_COUNT_PLOT = "auc_by_item_count.png"
SEGMENT_PLOT = "auc_by_segment.png"
CURVE_PLOTS = {  # folder of per-model point files -> (x, y, figure file, title)
    "roc": ("fpr", "tpr", "roc.png", "ROC"),
    "calibration": ("predicted", "observed", "calibration.png", "Calibration (mean predicted vs observed click rate)"),
}


def discover(root: Path, dataset: str, stages: list[str]) -> dict[str, Path]:
    """variant name -> its predictions file, for every variant the listed stages wrote."""
    found: dict[str, Path] = {}
    for stage in stages:
        for path in sorted(artifact_dir(root, stage, dataset).glob(f"*/{PREDICTIONS}")):
            if not path.parent.name.startswith("."):  # a run being written (or killed) in a .tmp- folder
                found[path.parent.name] = path
    if not found:
        raise DataError(
            f"no {PREDICTIONS} under artifacts/{{{','.join(stages)}}}/{dataset}/; run the training stages first"
        )
    return found


@dataclass
class TestSet:
    """The test split as every scorer sees it (this stage, the bench tables): labels, scenarios and
    the long-tail masks, whose frequencies come from the training split."""

    train: pd.DataFrame
    test: pd.DataFrame
    share: float
    y: np.ndarray
    scenario: np.ndarray
    lt_user: np.ndarray
    lt_item: np.ndarray
    item_count: np.ndarray  # training interactions of each test row's item
    user: np.ndarray  # each test row's user (the per-user grouped figures)

    @classmethod
    def load(cls, params: Params, root: Path) -> TestSet:
        from models.metrics import longtail_mask

        splits = load_splits(root, params.get_path("data.name"))
        train, test = splits["train"], splits["test"]
        share = float(params.get_path("evaluate.longtail_share"))
        return cls(
            train,
            test,
            share,
            test["label"].to_numpy(dtype=np.float64),
            test["scenario"].astype(str).to_numpy(),
            longtail_mask(train["user_id"].value_counts(), test["user_id"], share),
            longtail_mask(train["item_id"].value_counts(), test["item_id"], share),
            test["item_id"].map(train["item_id"].value_counts()).fillna(0).to_numpy(dtype=np.int64),
            test["user_id"].astype(str).to_numpy(),
        )

    def seed_probs(self, path: Path) -> dict[int, np.ndarray]:
        """seed -> test probabilities in test-row order from a predictions.parquet; DataError naming
        the file when the seeds do not cover the test split."""
        rows, out = self.seed_rows(path)
        if rows is not None:
            raise DataError(f"{path}: {len(rows)} test predictions per seed, the test split has {len(self.y)} rows")
        return out

    def seed_rows(self, path: Path) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
        """(the test rows a predictions.parquet covers, None when all; seed -> probabilities on them in
        row order). A method that scores a sample of the test users (PALR's pointwise LLM) covers some
        rows; every seed must cover the same ones. DataError naming the file otherwise."""
        preds = pd.read_parquet(path)
        out, rows = {}, None
        for seed, group in preds[preds["split"] == "test"].groupby("seed", sort=True):
            group = group.sort_values("row")
            covered = group["row"].to_numpy()
            if rows is not None and not np.array_equal(rows, covered):
                raise DataError(f"{path}: seed {seed} covers other test rows than seed {next(iter(out))}")
            if len(covered) and (
                covered[0] < 0 or covered[-1] >= len(self.y) or len(np.unique(covered)) < len(covered)
            ):
                raise DataError(f"{path}: seed {seed} has test rows outside 0..{len(self.y) - 1} or repeated")
            rows, out[int(seed)] = covered, group["prob"].to_numpy()
        if rows is None:
            raise DataError(f"{path}: no test predictions")
        return (None if len(rows) == len(self.y) else rows), out

    def subset(self, rows: np.ndarray) -> TestSet:
        """The same test set restricted to ``rows`` (long-tail masks and counts as in the whole)."""
        return replace(
            self,
            test=self.test.iloc[rows],
            y=self.y[rows],
            scenario=self.scenario[rows],
            lt_user=self.lt_user[rows],
            lt_item=self.lt_item[rows],
            item_count=self.item_count[rows],
            user=self.user[rows],
        )

    def score(self, probs: np.ndarray) -> dict[str, Any]:
        """All figures of one seed's test probabilities (:func:`score_seed`)."""
        return score_seed(self.y, probs, self.scenario, self.lt_user, self.lt_item, self.item_buckets, self.user)

    @cached_property
    def item_buckets(self) -> dict[str, np.ndarray]:
        """ITEM_COUNT_BUCKETS label -> the test rows whose item had that many training interactions."""
        return {
            label: (self.item_count >= lo) & (hi is None or self.item_count <= hi)
            for lo, hi, label in ITEM_COUNT_BUCKETS
        }

    def segment_rows(self) -> dict[str, Any]:
        """The long-tail share and the test rows of each 2x2 segment (the tables' column headers)."""
        from models.metrics import SEGMENTS

        return {
            "longtail_share": self.share,
            "test_rows": {k: int(((self.lt_user == u) & (self.lt_item == i)).sum()) for k, (u, i) in SEGMENTS.items()},
            "item_count_rows": {k: int(m.sum()) for k, m in self.item_buckets.items()},
        }


def score_seed(
    y: np.ndarray,
    p: np.ndarray,
    scenario: np.ndarray,
    lt_user,
    lt_item,
    item_buckets: dict[str, np.ndarray],
    user: np.ndarray,
) -> dict[str, Any]:
    """All figures of one seed's test predictions (``item_buckets``: :meth:`TestSet.item_buckets`;
    ``user``: the grouping of the per-user AUC and nDCG@10)."""
    from models.metrics import auc, grouped_auc, grouped_ndcg, logloss, segment_aucs

    return {
        "auc": auc(y, p),
        "logloss": logloss(y, p),
        "user_auc": grouped_auc(y, p, user),
        "user_ndcg10": grouped_ndcg(y, p, user, 10),
        "per_scenario": {str(s): auc(y[scenario == s], p[scenario == s]) for s in np.unique(scenario)},
        "per_segment": {k: v["auc"] for k, v in segment_aucs(y, p, lt_user, lt_item).items()},
        "per_item_count": {k: auc(y[m], p[m]) for k, m in item_buckets.items()},
    }


def _mean(values: list[float]) -> float:
    """Mean over the seeds that have a value (a segment can be empty: its AUC is NaN)."""
    finite = [v for v in values if not np.isnan(v)]
    return round(float(np.mean(finite)), 6) if finite else float("nan")


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds (and the AUC's standard deviation)."""
    aucs = [s["auc"] for s in per_seed]
    return {
        "auc": _mean(aucs),
        "auc_std": round(float(np.std(aucs)), 6),
        "auc_seeds": [round(float(a), 6) for a in aucs],
        "logloss": _mean([s["logloss"] for s in per_seed]),
        "user_auc": _mean([s["user_auc"] for s in per_seed]),
        "user_ndcg10": _mean([s["user_ndcg10"] for s in per_seed]),
        "seeds": len(per_seed),
        "per_scenario": {k: _mean([s["per_scenario"][k] for s in per_seed]) for k in per_seed[0]["per_scenario"]},
        "per_segment": {k: _mean([s["per_segment"][k] for s in per_seed]) for k in per_seed[0]["per_segment"]},
        "per_item_count": {k: _mean([s["per_item_count"][k] for s in per_seed]) for k in per_seed[0]["per_item_count"]},
    }


def roc_points(y: np.ndarray, p: np.ndarray, points: int = 101) -> pd.DataFrame:
    """The ROC curve at ``points`` evenly spaced false-positive rates (small enough for dvc plots)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    grid = np.linspace(0, 1, points)
    return pd.DataFrame({"fpr": grid, "tpr": np.interp(grid, fpr, tpr)})


def calibration_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted probability vs observed click rate in ``bins`` equal-width bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    frame = pd.DataFrame({"bin": idx, "predicted": p, "observed": y})
    return frame.groupby("bin", as_index=False).agg(predicted=("predicted", "mean"), observed=("observed", "mean"))


def run(params: Params, root: Path) -> dict[str, Any]:
    """Score every variant's test predictions; write metrics, tables and plot data."""
    from models.metrics import relaimpr

    dataset = params.get_path("data.name")
    method = split_method(root, dataset)
    base = params.get_path("evaluate.base_model")
    test_set = TestSet.load(params, root)

    results, roc, calib, sampled, all_probs = {}, [], [], {}, {}
    for name, path in discover(root, dataset, list(SCORED)).items():
        rows, by_seed = test_set.seed_rows(path)
        probs = list(by_seed.values())
        if rows is not None:
            sampled[name] = (path.parent.parent.parent.name, rows, probs)
            continue
        all_probs[name] = probs
        per_seed = [test_set.score(p) for p in probs]
        if probs:  # one curve per model: its first seed's
            roc.append(roc_points(test_set.y, probs[0]).assign(model=name))
            calib.append(calibration_bins(test_set.y, probs[0]).assign(model=name))
        results[name] = {"stage": path.parent.parent.parent.name, **aggregate(per_seed)}

    base_auc = results.get(base, {}).get("auc")
    for entry in results.values():
        entry["relaimpr"] = round(relaimpr(entry["auc"], base_auc), 6) if base_auc else None
    segments = test_set.segment_rows()
    on_sample = sample_results(test_set, sampled, all_probs.get(base))
    table = results_markdown(dataset, results, base, segments)
    if on_sample:
        table += "\n" + sample_markdown(on_sample, base)
    palr = collect_palr(root, dataset)
    table += palr_markdown(palr)

    with atomic_dir(artifact_dir(root, STAGE, dataset)) as tmp:
        write_text(tmp / "results.md", table)
        summary = {"dataset": dataset, "split_method": method, "base_model": base, "segments": segments}
        write_json({**summary, "models": results, "sampled": on_sample, "palr": palr}, tmp / "results.json")
        for kind, frames in (("roc", roc), ("calibration", calib)):
            (tmp / kind).mkdir()
            for frame in frames:  # one file per model: one series per model in `dvc plots show`
                frame.drop(columns="model").to_csv(tmp / kind / f"{frame['model'].iloc[0]}.csv", index=False)
        figures = write_plots(tmp, results, segments, {"roc": roc, "calibration": calib}, f"{dataset}, {method} split")
        write_json({name: {k: v for k, v in r.items() if k != "stage"} for name, r in results.items()}, tmp / METRICS)
    folder = artifact_dir(root, STAGE, dataset).relative_to(root)
    return {  # in the order the asset page lists them
        "dataset": dataset,
        "models": len(results),
        "scores_table": results_preview(results),
        **{f"{Path(name).stem}_png": str(folder / name) for name in figures},
        "results_file_path": str(folder / "results.md"),
        "results_md": table,
        **{f"auc_{k}": v["auc"] for k, v in results.items()},
    }


def write_plots(
    folder: Path, results: dict[str, Any], segments: dict[str, Any], curves: dict[str, list], title: str
) -> list[str]:
    """The evaluation's figures in ``folder``: AUC by long-tail segment and by item training count, ROC
    and calibration (one line per model); the file names written."""
    from assets.plots import plot_by_bucket, plot_curves

    plot_by_bucket(
        results, "per_segment", segments["test_rows"], folder / SEGMENT_PLOT, f"AUC by long-tail segment: {title}",
        f"long-tail segment (users, items holding the bottom {segments['longtail_share']:.0%} of training rows)",
        names=SEGMENT_TITLES,
    )  # fmt: skip
    plot_by_bucket(
        results, "per_item_count", segments["item_count_rows"], folder / ITEM_COUNT_PLOT,
        f"AUC by item training count: {title}",
        "item's interactions in the training split (test rows per bucket)",
    )  # fmt: skip
    for kind, (x, y, name, heading) in CURVE_PLOTS.items():
        plot_curves(curves[kind], results, x, y, folder / name, f"{heading}: {title}")
    return [*(name for _, _, name, _ in CURVE_PLOTS.values()), SEGMENT_PLOT, ITEM_COUNT_PLOT]


def results_preview(results: dict[str, Any]) -> dict[str, Any]:
    """Every scored variant, best first, as a table preview: AUC (± over seeds), LogLoss, RelaImpr, the
    AUC of each long-tail segment."""
    rows = [
        {
            "model": name,
            "stage": r["stage"],
            "auc": r["auc"],
            "auc_std": r["auc_std"],
            "logloss": r["logloss"],
            "relaimpr_pct": None if r.get("relaimpr") is None else round(r["relaimpr"] * 100, 2),
            "seeds": r["seeds"],
            **{f"auc_{segment}": r["per_segment"].get(segment) for segment in SEGMENT_TITLES},
        }
        for name, r in sorted(results.items(), key=lambda kv: -kv[1]["auc"])
    ]
    return preview_table(pd.DataFrame(rows), rows=len(rows))


def sample_results(
    test_set: TestSet, sampled: dict[str, tuple[str, np.ndarray, list[np.ndarray]]], base_probs: list | None
) -> dict[str, Any]:
    """The figures of the methods that scored a sample of the test rows, each next to the base model
    on exactly the same rows (``base_auc``; RelaImpr against it)."""
    from models.metrics import auc, relaimpr

    out = {}
    for name, (stage, rows, probs) in sampled.items():
        part = test_set.subset(rows)
        entry = {"stage": stage, "rows": int(len(rows)), "users": int(len(np.unique(part.user)))}
        entry.update(aggregate([part.score(p) for p in probs]))
        base_auc = _mean([auc(part.y, p[rows]) for p in base_probs]) if base_probs else None
        entry["base_auc"] = base_auc
        entry["relaimpr"] = round(relaimpr(entry["auc"], base_auc), 6) if base_auc else None
        out[name] = entry
    return out


def sample_markdown(results: dict[str, Any], base: str) -> str:
    """The table of the methods scored on a sample of the test users, with the base model on the same rows."""
    lines = [
        f"Scored on a sample of the test users (their test rows only), next to {base} on the same rows:",
        "",
        f"| model | stage | rows | users | AUC | ± | LogLoss | {base} AUC, same rows | RelaImpr | "
        + " | ".join(SEGMENT_TITLES.values()) + " | seeds |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(SEGMENT_TITLES) + "---|",
    ]  # fmt: skip
    for name, r in results.items():
        segments = " | ".join(_fmt(r["per_segment"].get(k)) for k in SEGMENT_TITLES)
        lines.append(
            f"| {name} | {r['stage']} | {r['rows']} | {r['users']} | {_fmt(r['auc'])} | {r['auc_std']:.4f} | "
            f"{_fmt(r['logloss'])} | {_fmt(r['base_auc'])} | {_fmt(r['relaimpr'], pct=True)} | {segments} | "
            f"{r['seeds']} |"
        )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value * 100:+.2f}%" if pct else f"{value:.4f}"


def results_markdown(dataset: str, results: dict[str, Any], base: str, segments: dict[str, Any]) -> str:
    """The tables of the papers: overall (Table 2), long-tail segments (Table 6), per scenario."""
    names = list(results)
    scenarios = sorted({s for r in results.values() for s in r["per_scenario"]})
    lines = [
        f"### {dataset}: test set, mean over seeds (RelaImpr vs {base})",
        "",
        "| model | stage | AUC | ± | LogLoss | RelaImpr | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        r = results[n]
        lines.append(
            f"| {n} | {r['stage']} | {_fmt(r['auc'])} | {r['auc_std']:.4f} | {_fmt(r['logloss'])} | "
            f"{_fmt(r['relaimpr'], pct=True)} | {r['seeds']} |"
        )
    rows = segments["test_rows"]
    lines += [
        "",
        f"Long-tail segments (bottom {segments['longtail_share']:.0%} of training interactions), test AUC:",
        "",
        "| model | " + " | ".join(f"{t} (n={rows[k]})" for k, t in SEGMENT_TITLES.items()) + " |",
        "|---|" + "---|" * len(SEGMENT_TITLES),
    ]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_fmt(results[n]["per_segment"].get(k)) for k in SEGMENT_TITLES) + " |")
    counts = segments["item_count_rows"]
    lines += [
        "",
        "Test AUC by the item's interactions in the training split (0: items train never saw):",
        "",
        "| model | " + " | ".join(f"{k} (n={n})" for k, n in counts.items()) + " |",
        "|---|" + "---|" * len(counts),
    ]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_fmt(results[n]["per_item_count"].get(k)) for k in counts) + " |")
    lines += [
        "",
        "Per-scenario test AUC:",
        "",
        "| model | " + " | ".join(scenarios) + " |",
        "|---|" + "---|" * len(scenarios),
    ]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_fmt(results[n]["per_scenario"].get(s)) for s in scenarios) + " |")
    return "\n".join(lines) + "\n"


def zoo_markdown(dataset: str, results: dict[str, Any], base: str, order: list[str]) -> str:
    """The README's table: the baselines of the ``train`` stage in ``order`` (params ``ctr.models``; test
    AUC / LogLoss, mean over seeds)."""
    lines = [
        f"{dataset}, test set, mean ± std of AUC over seeds (RelaImpr vs {base}; `dvc repro`, "
        "docs/RESULTS.md has every variant):",
        "",
        "| model | AUC | ± | LogLoss | RelaImpr | seeds |",
        "|---|---|---|---|---|---|",
    ]
    zoo = [n for n in results if results[n]["stage"] == "train"]
    for name in sorted(zoo, key=lambda n: order.index(n) if n in order else len(order)):
        r = results[name]
        lines.append(
            f"| {name} | {_fmt(r['auc'])} | {r['auc_std']:.4f} | {_fmt(r['logloss'])} | "
            f"{_fmt(r['relaimpr'], pct=True)} | {r['seeds']} |"
        )
    return "\n".join(lines) + "\n"


def read_results(root: Path, dataset: str) -> dict[str, Any]:
    """The evaluate stage's results.json for ``dataset`` (a missing one names the stage to run)."""
    path = artifact_dir(root, STAGE, dataset) / "results.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the evaluate stage first (`dvc repro`)")
    return json.loads(path.read_text(encoding="utf-8"))


def publish(root: Path, params: Params) -> list[Path]:
    """Copy the configured dataset's evaluated tables into the docs: every variant into docs/RESULTS.md,
    the zoo into README.md (generated blocks; the hand-written text around them is kept)."""
    root = Path(root)
    dataset = params.get_path("data.name")
    results = read_results(root, dataset)
    table = (artifact_dir(root, STAGE, dataset) / "results.md").read_text(encoding="utf-8")
    replace_block(root / RESULTS_DOC, f"evaluate {dataset}", table)
    zoo = zoo_markdown(dataset, results["models"], results["base_model"], list(params.get_path("ctr.models")))
    replace_block(root / README, f"evaluate zoo {dataset}", zoo)
    return [root / RESULTS_DOC, root / README]
