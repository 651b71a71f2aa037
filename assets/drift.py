"""Stage `drift`: Evidently data-drift reports of the traffic the CTR service scores against the
training data, overall and for each long-tail segment, on the features and the predictions.

* reference = the training split (``drift.reference_rows`` seeded sample, or all of it), scored by
  the registered model (artifacts/bento/<ds>/model/, the very files the service loads);
* current = the most recent ``drift.max_current_rows`` predictions of the service's log
  (``<serve.log_dir>/<ds>/``, with the probabilities it returned) when it holds at least
  ``drift.min_log_rows`` of them, else the test split scored by the same model (``source: test``);
* segments: ``overall`` and the 2x2 long-tail user x long-tail item segments of
  ``models.metrics.SEGMENTS`` (long-tail = the least frequent users/items holding the bottom
  ``evaluate.longtail_share`` of training interactions, ``models.metrics.longtail_mask``); a segment
  with fewer than ``drift.min_segment_rows`` rows on either side is reported but not tested;
* columns: the encoder's fields minus ``drift.exclude_columns`` (ids and zip: per-user identities
  whose distribution changes with WHICH users show up, not with how they look), plus ``prediction``.

Evidently's DataDriftPreset tests every column (its own choice of method by column type and sample
size unless ``drift.cat_method`` / ``drift.num_method`` name one: with a reference over 1,000 rows,
Jensen-Shannon distance for categorical and normed Wasserstein distance for numeric columns, both
at 0.1); a segment DRIFTS when the share of drifted columns, as the preset's own DriftedColumnsCount
metric counts it, reaches ``drift.drift_share``. The drifted columns' names and every column's score
come from its per-column ValueDrift metrics and their tests. Small samples false-alarm (a few hundred
rows of held-out traffic can "drift" in several columns), hence ``drift.min_segment_rows``.

Writes artifacts/drift/<ds>/: ``<segment>.html`` and ``<segment>.json`` per tested segment and
``summary.json`` (per segment: rows, drifted columns, scores, drifted-column count and share,
drifted). Once that folder is in place, the run's snapshots are added to the drift history, an
Evidently workspace under ``drift.workspace`` (assets/drift_history.py; `make drift-ui` serves it
with a dashboard of each segment's drifted-column share over time). The Dagster metadata holds one
number per tested segment (``drifted_share_<segment>``) and the number of drifted segments, which
the asset's Plots tab draws run after run, the segments table, each report's path and the link to
the Evidently project.

The Dagster asset check (orchestration/monitoring.py) fails when any tested segment drifts; one
sensor re-runs the stage when the log has grown by ``drift.rerun_rows`` predictions, another (off by
default) starts the ``retrain`` job when the check fails. The log is not a DVC dependency (it grows
outside the pipeline), nor is the history a DVC output: under DVC the stage re-runs when the model,
the splits or the params change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.bento import REGISTRATION, registered_model_dir
from assets.split import load_splits
from assets.tables import read_json, write_json
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir

STAGE = "drift"
SUMMARY = "summary.json"
OVERALL = "overall"
PREDICTION = "prediction"
MISSING = "(missing)"


def log_dir(params: Params, root: Path, dataset: str) -> Path:
    """Where the service logs its predictions for ``dataset``."""
    return Path(root) / params.get_path("serve.log_dir") / dataset


def segment_file(segment: str) -> str:
    """A shell-friendly file stem for a segment name (``lt_user&lt_item`` -> ``lt_user-lt_item``)."""
    return segment.replace("&", "-")


def drift_columns(fields: list[dict[str, str]], exclude: list[str]) -> dict[str, str]:
    """Column -> ``numeric`` | ``categorical`` for the encoder ``fields`` kept, plus the prediction."""
    columns = {
        f["name"]: "numeric" if f["kind"] == "numeric" else "categorical"
        for f in fields
        if f["name"] not in set(exclude)
    }
    return {**columns, PREDICTION: "numeric"}


def current_traffic(
    params: Params, root: Path, dataset: str, test: pd.DataFrame, predictor
) -> tuple[pd.DataFrame, str]:
    """(frame with a ``prediction`` column, "log" | "test"): the served log when it is long enough."""
    from assets.prediction_log import read_log

    cfg = params.get_path("drift")
    served = read_log(log_dir(params, root, dataset), last=cfg["max_current_rows"])
    if len(served) >= int(cfg["min_log_rows"]):
        return served.rename(columns={"prob": PREDICTION}), "log"
    return test.assign(**{PREDICTION: predictor.predict_frame(test)}), "test"


def _evidently_frame(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """The drift columns with the dtypes Evidently expects (absent columns become missing values)."""
    out = {}
    for name, kind in columns.items():
        values = frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        if kind == "numeric":
            out[name] = pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            out[name] = values.astype("string").fillna(MISSING).astype(object)
    return pd.DataFrame(out)


def _report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: dict[str, str],
    cfg: dict[str, Any],
    segment: str,
    run_labels: dict[str, str],
):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from assets.drift_history import labels

    definition = DataDefinition(
        numerical_columns=[c for c, k in columns.items() if k == "numeric"],
        categorical_columns=[c for c, k in columns.items() if k == "categorical"],
    )
    preset = DataDriftPreset(
        columns=list(columns),
        drift_share=float(cfg["drift_share"]),
        cat_method=cfg.get("cat_method"),
        num_method=cfg.get("num_method"),
    )
    return Report([preset], include_tests=True).run(
        Dataset.from_pandas(_evidently_frame(current, columns), data_definition=definition),
        Dataset.from_pandas(_evidently_frame(reference, columns), data_definition=definition),
        **labels(segment, run_labels),
    )


def _metric_type(config: dict[str, Any]) -> str:
    """``ValueDrift`` for Evidently's ``evidently:metric_v2:ValueDrift``."""
    return str(config.get("type", "")).rsplit(":", 1)[-1]


def _figures(snapshot: Any, drift_share: float) -> dict[str, Any]:
    """Drifted-column count and share (Evidently's DriftedColumnsCount), the drifted columns and the
    per-column scores (its ValueDrift metrics and their tests) from an Evidently snapshot."""
    from assets.drift_history import DRIFT_METRIC

    result = snapshot.dict()
    scores, methods, counted = {}, {}, []
    for metric in result["metrics"]:
        config = metric["config"]
        if _metric_type(config) == "ValueDrift":
            scores[config["column"]] = round(float(metric["value"]), 6)
            methods[config["column"]] = f"{config.get('method')} (threshold {config.get('threshold')})"
        elif _metric_type(config) == DRIFT_METRIC:
            counted.append(metric["value"])
    if len(counted) != 1:
        raise ValueError(f"the Evidently drift report holds {len(counted)} {DRIFT_METRIC} metrics, expected 1")
    drifted = sorted(
        test["metric_config"]["params"]["column"]
        for test in result["tests"]
        if _metric_type(test["metric_config"]["params"]) == "ValueDrift" and test["status"] == "FAIL"
    )
    share = float(counted[0]["share"])
    return {
        "drifted_columns": drifted,
        "n_columns": len(scores),
        "n_drifted": int(counted[0]["count"]),
        "share": round(share, 6),
        "drifted": share >= drift_share,
        "scores": scores,
        "methods": methods,
    }


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    train: pd.DataFrame,
    columns: dict[str, str],
    cfg: dict[str, Any],
    longtail_share: float,
    run_labels: dict[str, str],
    out_dir: Path | None = None,
) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """Drift of ``current`` against ``reference``, overall and per long-tail segment: (figures per
    segment, the Evidently snapshot of each tested segment).

    Both frames carry ``user_id``, ``item_id``, the ``columns`` and ``prediction``; long-tail users
    and items are the least frequent in ``train`` holding ``longtail_share`` of its rows. Snapshots
    are labelled with ``run_labels`` (dataset, model, source; see ``assets.drift_history.labels``).
    With ``out_dir`` each tested segment's report is saved there as HTML and JSON.
    """
    from models.metrics import SEGMENTS, longtail_mask

    share = float(longtail_share)
    user_counts, item_counts = train["user_id"].value_counts(), train["item_id"].value_counts()

    def masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        user = longtail_mask(user_counts, frame["user_id"].astype(str), share)
        item = longtail_mask(item_counts, frame["item_id"].astype(str), share)
        return {
            OVERALL: np.ones(len(frame), dtype=bool),
            **{name: (user == lt_user) & (item == lt_item) for name, (lt_user, lt_item) in SEGMENTS.items()},
        }

    ref_masks, cur_masks = masks(reference), masks(current)
    results, snapshots = {}, []
    for segment in ref_masks:
        ref, cur = reference[ref_masks[segment]], current[cur_masks[segment]]
        entry: dict[str, Any] = {"rows_reference": int(len(ref)), "rows_current": int(len(cur))}
        if min(len(ref), len(cur)) < int(cfg["min_segment_rows"]):
            results[segment] = {
                **entry,
                "tested": False,
                "drifted": False,
                "reason": f"fewer than {cfg['min_segment_rows']} rows (drift.min_segment_rows)",
            }
            continue
        snapshot = _report(ref, cur, columns, cfg, segment, run_labels)
        if out_dir is not None:
            snapshot.save_html(str(Path(out_dir) / f"{segment_file(segment)}.html"))
            snapshot.save_json(str(Path(out_dir) / f"{segment_file(segment)}.json"))
        results[segment] = {**entry, "tested": True, **_figures(snapshot, float(cfg["drift_share"]))}
        snapshots.append(snapshot)
    return results, snapshots


def run(params: Params, root: Path) -> dict[str, Any]:
    """Compare the served (or test) traffic with the training data; write reports and summary.json,
    then add the reports to the drift history (``assets.drift_history``)."""
    from assets.drift_history import record
    from models.predictor import Predictor

    root = Path(root)
    dataset = params.get_path("data.name")
    cfg = dict(params.get_path("drift"))
    if not 0 < float(cfg["drift_share"]) <= 1:
        raise ParamsError(f"drift.drift_share must be in (0, 1], got {cfg['drift_share']!r}")
    registration = read_json(artifact_dir(root, "bento", dataset) / REGISTRATION)
    predictor = Predictor.load(registered_model_dir(root, dataset))
    splits = load_splits(root, dataset)
    train = splits["train"]
    reference = train
    if cfg.get("reference_rows") and len(train) > int(cfg["reference_rows"]):
        reference = train.sample(int(cfg["reference_rows"]), random_state=int(cfg["seed"]))
    reference = reference.assign(**{PREDICTION: predictor.predict_frame(reference)})
    current, source = current_traffic(params, root, dataset, splits["test"], predictor)
    columns = drift_columns(registration["fields"], list(cfg["exclude_columns"]))
    run_labels = {"dataset": dataset, "model": registration["tag"], "source": source}
    with atomic_dir(artifact_dir(root, STAGE, dataset)) as tmp:
        segments, snapshots = compare(
            reference,
            current,
            train,
            columns,
            cfg,
            float(params.get_path("evaluate.longtail_share")),
            run_labels,
            out_dir=tmp,
        )
        summary = {**run_labels, "columns": columns, "drift_share": float(cfg["drift_share"]), "segments": segments}
        write_json(summary, tmp / SUMMARY)
    history = record(params, root, dataset, list(segments), snapshots)  # the outputs are in place by now
    return metadata(summary, history, artifact_dir(Path(), STAGE, dataset))


def shares(summary: dict[str, Any]) -> dict[str, float]:
    """Segment -> its share of drifted columns, for the tested segments of a drift summary."""
    return {name: s["share"] for name, s in summary["segments"].items() if s["tested"]}


def drifted_segments(summary: dict[str, Any]) -> list[str]:
    """The segments of a drift summary whose drifted-column share reached ``drift.drift_share``."""
    return [name for name, s in summary["segments"].items() if s["drifted"]]


def segments_table(summary: dict[str, Any]) -> str:
    """A markdown table of every segment: rows, drifted columns, drifted-column share."""
    lines = ["| segment | rows (ref / current) | drifted columns | share |", "|---|---|---|---|"]
    for name, s in summary["segments"].items():
        cols = (", ".join(s["drifted_columns"]) or "-") if s["tested"] else "not tested"
        share = (f"{s['share']:.2f}" + (" **DRIFT**" if s["drifted"] else "")) if s["tested"] else "-"
        lines.append(f"| {name} | {s['rows_reference']} / {s['rows_current']} | {cols} | {share} |")
    return "\n".join(lines)


def metadata(summary: dict[str, Any], history: dict[str, str], out_dir: Path) -> dict[str, Any]:
    """The figures shown in Dagster: a drifted-column share per tested segment and the number of
    drifted segments (numbers, so the Plots tab draws their history), the segments table, each
    tested segment's HTML report (``out_dir``, relative to the project root) and the Evidently project."""
    segments, tested = summary["segments"], shares(summary)
    return {
        "dataset": summary["dataset"],
        "model": summary["model"],
        "source": summary["source"],
        "rows_current": segments[OVERALL]["rows_current"],
        **{f"drifted_share_{segment_file(name)}": float(share) for name, share in tested.items()},
        "drifted_segments_count": len(drifted_segments(summary)),
        "drifted_segments": drifted_segments(summary),
        "drift_share_threshold": summary["drift_share"],
        "segments_md": segments_table(summary),
        **{f"report_{segment_file(name)}_path": str(out_dir / f"{segment_file(name)}.html") for name in tested},
        "evidently_project": history["project"],
        "evidently_url": history["url"],
    }


def read_summary(params: Params, root: Path) -> dict[str, Any]:
    """The summary.json the last drift run wrote for ``data.name``."""
    return read_json(artifact_dir(root, STAGE, params.get_path("data.name")) / SUMMARY)
