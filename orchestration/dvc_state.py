"""One state for both runners: what Dagster materializes is recorded in DVC, what `dvc repro` produced
is reported to Dagster.

* After a Dagster asset runs its stage, :func:`record` runs ``dvc commit --force`` for that stage
  instance: dvc.lock, the DVC cache and the run-cache then hold the new outputs, so `dvc status` stays
  clean and `dvc repro` re-runs nothing. Only when the asset ran with exactly the params DVC would
  use: the partition is params.yaml's ``data.name`` and no profile is active (DVC's pipeline is that
  one dataset; a profile's runs are `dvc exp run` experiments). Otherwise nothing is recorded, and the
  asset's metadata says why.
* :func:`render_plots` renders DVC's plots page after a stage with plots is recorded, so the asset
  links a page that shows what was just materialized.
* :func:`dvc_lock_sensor` reads dvc.lock and reports an ``AssetMaterialization`` for every stage
  instance whose recorded outputs changed since it last looked and that Dagster did not materialize
  itself (its latest materialization already carries those outputs' hashes): after `dvc repro`, the UI
  shows the assets materialized.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

PLOTS_DIR = "artifacts/dvc_plots"  # `dvc plots show` writes its page here (index.html)
OUTS_KEY = "dvc_outs"  # the metadata entry holding an instance's output hashes, as dvc.lock records them
INTERVAL_S = 60


def instance_name(stage: str, variant: str | None) -> str:
    """The dvc.yaml name of a stage instance: ``train@dcnv2`` for a fan-out stage, else the stage."""
    return f"{stage}@{variant}" if variant else stage


def locked_outputs(root: Path) -> dict[str, str]:
    """instance -> its outputs' hashes in dvc.lock (``path:md5`` joined), for every recorded instance."""
    path = Path(root) / "dvc.lock"
    if not path.is_file():
        return {}
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})
    return {
        name: " ".join(f"{out['path']}:{out.get('md5', '')}" for out in entry.get("outs", []))
        for name, entry in stages.items()
    }


def tracked(root: Path, dataset: str, dvc_dataset: str, profile_active: bool) -> str | None:
    """Why a materialization is not recorded in DVC, or None when it is."""
    if not (Path(root) / ".dvc").is_dir() or not (Path(root) / ".git").exists():
        return "not a DVC repository in a git checkout"
    if profile_active:
        return "a profile is active (its runs are `dvc exp run` experiments)"
    if dataset != dvc_dataset:
        return f"DVC's pipeline is data.name = {dvc_dataset}, not {dataset}"
    return None


def record(root: Path, stage: str, variant: str | None) -> dict[str, Any]:
    """``dvc commit --force`` of one stage instance (waiting for DVC's lock); metadata saying what was
    recorded. A failing commit raises with DVC's message: the lock would otherwise disagree silently."""
    name = instance_name(stage, variant)
    dvc = str(Path(sys.executable).parent / "dvc")
    done = subprocess.run(
        [dvc, "--wait-for-lock", "commit", "--force", name],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dvc commit {name} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
    return {"dvc": f"recorded in dvc.lock as {name}", OUTS_KEY: locked_outputs(root).get(name, "")}


def render_plots(root: Path) -> dict[str, Any]:
    """``dvc plots show`` of the workspace into ``PLOTS_DIR``, swapped in whole (steps running at once
    never leave a half-written page): DVC's own page of every plot dvc.yaml declares (ROC, calibration,
    training curves); metadata linking it, or saying why there is none."""
    from llm4ctr.atomic import atomic_dir
    from llm4ctr.errors import OutputLocked

    dvc = str(Path(sys.executable).parent / "dvc")
    link = {"dvc_plots_path": f"{PLOTS_DIR}/index.html"}
    try:
        with atomic_dir(Path(root) / PLOTS_DIR) as tmp:
            done = subprocess.run([dvc, "plots", "show", "--out", str(tmp)], cwd=root, capture_output=True, text=True)
            if done.returncode != 0 or not (tmp / "index.html").is_file():
                raise RuntimeError(
                    f"`dvc plots show` failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
                )
    except OutputLocked:
        return link  # a step running beside this one is rendering the same page
    except RuntimeError as exc:
        return {"dvc_plots": str(exc)}
    return link


def dvc_lock_sensor(asset_keys: dict[str, dg.AssetKey], dataset_of) -> dg.SensorDefinition:
    """Reports what `dvc repro` recorded in dvc.lock as materializations of the matching assets
    (``asset_keys``: instance name -> asset key; ``dataset_of(project)``: the partition DVC's runs are)."""

    @dg.sensor(
        name="dvc_lock_observer",
        minimum_interval_seconds=INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Shows stages that `dvc repro` ran (or restored from the run-cache) as materialized",
    )
    def _sensor(context: dg.SensorEvaluationContext, project: dg.ConfigurableResource):
        root = Path(project.root)
        seen = json.loads(context.cursor) if context.cursor else {}
        current = locked_outputs(root)
        dataset = dataset_of(project)
        events = []
        for name, outs in sorted(current.items()):
            key = asset_keys.get(name)
            if key is None or seen.get(name) == outs:
                continue
            latest = context.instance.get_latest_materialization_event(key)
            entry = latest.asset_materialization.metadata.get(OUTS_KEY) if latest else None
            if entry is None or entry.value != outs:  # not a materialization Dagster made itself
                events.append(
                    dg.AssetMaterialization(
                        asset_key=key,
                        partition=dataset,
                        description="recorded by DVC (`dvc repro` ran it or restored it from the run-cache)",
                        metadata={"dvc": f"dvc.lock: {name}", OUTS_KEY: outs},
                    )
                )
        if current == seen:
            return dg.SkipReason("dvc.lock unchanged")
        return dg.SensorResult(asset_events=events, cursor=json.dumps(current, sort_keys=True))

    return _sensor
