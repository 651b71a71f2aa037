"""Generate dvc.yaml from the stage registry, so `dvc repro` and Dagster run the same DAG.

``{dataset}`` in registry paths becomes DVC's ``${data.name}`` template, read from params.yaml, and
``{variant}`` DVC's ``${item}``, the loop variable of a ``foreach`` stage (``${key}`` params references
pass through: DVC fills them in itself).
Outputs are plain cached outputs, so DVC's run-cache engages: a stage whose code, dependencies and
params match an earlier run (here, or on a machine that pushed to the remote: ``dvc repro --pull``) is
restored from the cache instead of run. DVC removes an output before its stage runs; when the run fails,
``dvc checkout <stage>`` restores the last good one from the cache (dvc.lock still names it).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from assets.curves import CURVES
from assets.curves import FIGURE as CURVE_FIGURE
from assets.curves import METRICS as CURVE_METRICS
from assets.curves import PLOTS as CURVE_PLOTS
from assets.registry import DATASET, STAGES, VARIANT, Stage

HEADER = (
    "# GENERATED from assets/registry.py by `llm4ctr dvc-yaml`; do not edit by hand.\n"
    "# tests/test_pipeline_graph.py fails when this file and the registry disagree.\n"
)
DVC_DATASET = "${data.name}"
DVC_VARIANT = "${item}"  # DVC's name for the current element of a foreach list
# `dvc plots show`: one series per model file in each folder the evaluate stage writes
PLOTS = [
    {f"artifacts/evaluate/{DVC_DATASET}/roc": {"x": "fpr", "y": "tpr", "template": "simple", "title": "ROC (test)"}},
    {
        f"artifacts/evaluate/{DVC_DATASET}/calibration": {
            "x": "predicted",
            "y": "observed",
            "template": "simple",
            "title": "Calibration (test)",
        }
    },
]


# `dvc metrics show/diff`, `dvc exp show`: the evaluate stage's figures, inside its cached output folder
METRICS = [f"artifacts/evaluate/{DVC_DATASET}/metrics.json"]


def _dvc_path(path: str) -> str:
    return path.replace(DATASET, DVC_DATASET).replace(VARIANT, DVC_VARIANT)


def stage_entry(stage: Stage) -> dict:
    """The dvc.yaml entry of one registry stage (a ``foreach`` block for fan-out stages)."""
    entry = {
        "desc": stage.description,
        "cmd": f"llm4ctr stage {stage.name}" + (f" --variant {DVC_VARIANT}" if stage.fan_out else ""),
        "deps": [_dvc_path(p) for p in (*stage.deps, *stage.code)],
        "params": list(stage.params),
        "outs": [_dvc_path(p) for p in stage.outs],
    }
    metrics = [_dvc_path(p) for p in stage.metrics]
    if stage.curves:  # assets/curves.py: per-seed curves (x = epoch or step) and their last values
        curves = _dvc_path(CURVES.format(stage=stage.name, dataset=DATASET, variant=VARIANT))
        entry["plots"] = [{f"{curves}/{CURVE_PLOTS}": {"x": "step"}}, f"{curves}/{CURVE_FIGURE}"]
        metrics.append(f"{curves}/{CURVE_METRICS}")
    if metrics:
        entry["metrics"] = metrics
    if stage.fan_out:
        return {"foreach": f"${{{stage.fan_out}}}", "do": entry}
    return entry


def has_plots(stage: Stage) -> bool:
    """Whether dvc.yaml declares plots of ``stage``: its training curves, or top-level plots of its outputs."""
    prefix = f"artifacts/{stage.name}/"
    return stage.curves or any(path.startswith(prefix) for entry in PLOTS for path in entry)


def render() -> str:
    """The full text of dvc.yaml."""
    doc = {"stages": {stage.name: stage_entry(stage) for stage in STAGES}, "metrics": METRICS, "plots": PLOTS}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def write(root: Path) -> Path:
    path = Path(root) / "dvc.yaml"
    path.write_text(render(), encoding="utf-8")
    return path
