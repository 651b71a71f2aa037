"""Dagster definitions: every registry stage as a partitioned asset, its GX suite as a blocking check.

Assets are generated from assets/registry.py (the same list dvc.yaml is generated from), so the UI
and `dvc repro` always show one DAG. The dataset is a static partition; each asset calls the pure
stage function with params.yaml (plus the profile named by ``$LLM4CTR_PROFILE``, which `make ui
PROFILE=full` sets, so a profile's variants appear as assets) and ``data.name = <partition>``, and
shows the stage's figures as metadata (orchestration/metadata.py: tables, inline plots, report links,
numbers the Plots tab draws). A failing check blocks everything downstream; checks are partitioned
like the assets, so each dataset has its own check history. Each asset's
``code_version`` is a digest of the stage's code (the files dvc.yaml lists as its code deps), so the UI
marks an asset whose code changed since its last materialization.

After a stage runs, its outputs are recorded in DVC (``dvc commit``), and a sensor reports what `dvc
repro` recorded in dvc.lock, so both runners show one state (orchestration/dvc_state.py).

A distributed stage whose ``launch`` params ask for several processes runs as `llm4ctr stage` in a
subprocess through Dagster Pipes (``PipesSubprocessClient``): the command starts torchrun, and rank 0
reports the stage's metadata back, so a multi-GPU materialization shows the same figures in the UI.
"""

import functools
import hashlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import dagster as dg

import orchestration  # noqa: F401  (telemetry off, offline hub)
from assets.curves import FIGURE as CURVES_FIGURE
from assets.curves import curves_dir
from assets.registry import STAGES, Stage, instance_edges
from llm4ctr.params import PARAMS_FILE, Params, format_override, load_params, read_profile
from orchestration.dvc_state import dvc_lock_sensor, instance_name, record, render_plots, tracked
from orchestration.dvc_yaml import has_plots
from orchestration.launch import Launch
from orchestration.metadata import to_metadata
from orchestration.monitoring import drift_check, drift_sensor, retrain_sensor
from orchestration.runs import executor, jobs, limit_threads, nightly_schedule

# asset checks per dataset partition (Dagster marks partitioned checks "preview"): the docs say so
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)
DATASETS = ["ml-100k", "ml-1m", "bookcrossing", "amazon"]
datasets = dg.StaticPartitionsDefinition(DATASETS)


def profile_overrides(root: Path) -> dict[str, Any]:
    """The dotted overrides of the profile named by ``$LLM4CTR_PROFILE`` (none when unset or ``default``)."""
    name = os.environ.get("LLM4CTR_PROFILE", "default")
    return {} if name == "default" else read_profile(Path(root) / "profiles", name)


class Project(dg.ConfigurableResource):
    """Where the project lives: the root that holds params.yaml, data/ and artifacts/."""

    root: str = "."
    params_file: str = PARAMS_FILE

    def params(self, dataset: str | None = None) -> Params:
        """params.yaml with the active profile's overrides (and ``data.name = dataset`` when given)."""
        overrides = profile_overrides(Path(self.root))
        return load_params(
            Path(self.root) / self.params_file, {**overrides, **({"data.name": dataset} if dataset else {})}
        )

    def dvc_dataset(self) -> str:
        """params.yaml's data.name, no profile: the dataset of DVC's pipeline."""
        return load_params(Path(self.root) / PARAMS_FILE).get_path("data.name")

    def in_dvc(self, stage: Stage, variant: str | None, dataset: str) -> dict[str, Any]:
        """Record a stage instance's new outputs in DVC when DVC would have run it with these params, and
        render DVC's plots page when the stage has plots; metadata saying what was done."""
        why_not = tracked(Path(self.root), dataset, self.dvc_dataset(), bool(profile_overrides(Path(self.root))))
        if why_not is None and self.params_file != PARAMS_FILE:
            why_not = f"the params file is {self.params_file}, DVC reads {PARAMS_FILE}"
        if why_not:
            return {"dvc": f"not recorded: {why_not}"}
        done = record(Path(self.root), stage.name, variant)
        return {**done, **render_plots(Path(self.root))} if has_plots(stage) else done


ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def code_version(stage: Stage, root: Path = ROOT) -> str:
    """A digest of the contents of the stage's code files (folders: every file but bytecode) under ``root``."""
    digest = hashlib.sha256()
    for rel in stage.code:
        path = Path(root) / rel
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix != ".pyc") if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def asset_key(stage: str, variant: str | None) -> dg.AssetKey:
    """``ingest`` for plain stages, ``train/dcnv2`` for a variant of a fan-out stage."""
    return dg.AssetKey([stage, variant] if variant else [stage])


def stage_asset(stage: Stage, variant: str | None, upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    """A partitioned asset that runs ``stage`` (for ``variant``) on the partition's dataset."""

    @dg.asset(
        key=asset_key(stage.name, variant),
        description=stage.description,
        deps=upstream,
        partitions_def=datasets,
        group_name=stage.name if variant else "pipeline",
        kinds={"python"},
        code_version=code_version(stage),
    )
    def _asset(context: dg.AssetExecutionContext, project: Project):
        limit_threads()
        params = project.params(context.partition_key)
        if stage.distributed and Launch.from_params(params).processes > 1:  # torchrun, in a subprocess
            metadata = dict(
                dg.PipesSubprocessClient()
                .run(
                    command=stage_command(stage, variant, context.partition_key, project),
                    context=context,
                    cwd=project.root,
                )
                .get_materialize_result()
                .metadata
                or {}
            )
        else:
            values = stage.resolve()(params, Path(project.root), **({"variant": variant} if variant else {}))
            metadata = to_metadata(values, Path(project.root))
        root = Path(project.root)
        shown = {
            **curves_figure(stage, variant, context.partition_key, root),
            **project.in_dvc(stage, variant, context.partition_key),
        }
        metadata.update(to_metadata(shown, root))
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def curves_figure(stage: Stage, variant: str | None, dataset: str, root: Path) -> dict[str, str]:
    """``{"training_curves_png": <file>}`` for a stage instance that drew its training curves."""
    if not (stage.curves and variant):
        return {}
    figure = curves_dir(root, stage.name, dataset, variant) / CURVES_FIGURE
    return {"training_curves_png": str(figure.relative_to(root))} if figure.is_file() else {}


def stage_command(stage: Stage, variant: str | None, dataset: str, project: Project) -> list[str]:
    """`llm4ctr stage` for one stage instance with the project's params file and active profile: the
    command that launches torchrun and reports the stage's metadata back through Dagster Pipes."""
    overrides = [("-S", format_override(k, v)) for k, v in profile_overrides(Path(project.root)).items()]
    return [
        sys.executable, "-m", "orchestration.cli", "stage", stage.name, "--params", project.params_file,
        "--dataset", dataset, *(["--variant", variant] if variant else []), *(a for pair in overrides for a in pair),
    ]  # fmt: skip


def stage_check(stage: Stage) -> dg.AssetChecksDefinition:
    """A blocking check that re-runs the stage's GX suites on its written outputs; its metadata links the
    GX Data Docs pages of that validation."""

    @dg.asset_check(
        asset=asset_key(stage.name, None),
        name=f"{stage.name}_gx_suite",
        blocking=True,
        description=f"Great Expectations suites of `{stage.name}`",
        partitions_def=datasets,
    )
    def _check(context: dg.AssetCheckExecutionContext, project: Project) -> dg.AssetCheckResult:
        dataset = context.partition_key
        root = Path(project.root)
        report = stage.resolve("check")(project.params(dataset), root)
        shown = {"dataset": dataset, "summary_md": report.summary or "all expectations passed"}
        return dg.AssetCheckResult(
            passed=bool(report.success), metadata=to_metadata({**shown, **report.docs_metadata(root)}, root)
        )

    return _check


def build_assets(params: Params) -> list[dg.AssetsDefinition]:
    """One asset per stage instance (fan-out stages expand over their params list), edges from paths."""
    by_name = {s.name: s for s in STAGES}
    return [
        stage_asset(by_name[name], variant, [asset_key(*up) for up in ups])
        for (name, variant), ups in instance_edges(params).items()
    ]


def served_key(params: Params) -> dg.AssetKey:
    """The asset of the served model's stage instance (``serve.stage`` @ ``serve.variant``)."""
    stage = str(params.get_path("serve.stage"))
    fan_out = next(s.fan_out for s in STAGES if s.name == stage)
    return asset_key(stage, str(params.get_path("serve.variant")) if fan_out else None)


def instance_keys(params: Params) -> dict[str, dg.AssetKey]:
    """dvc.yaml instance name (``train@dcnv2``) -> asset key, for every stage instance of ``params``."""
    return {instance_name(name, variant): asset_key(name, variant) for name, variant in instance_edges(params)}


_params = Project().params()  # params.yaml and the active profile, read once for the whole definitions
defs = dg.Definitions(
    assets=build_assets(_params),
    asset_checks=[stage_check(s) for s in STAGES if s.check] + [drift_check(datasets)],
    jobs=jobs(served_key(_params)),
    schedules=[nightly_schedule(Project.dvc_dataset)],
    sensors=[drift_sensor(DATASETS), retrain_sensor(), dvc_lock_sensor(instance_keys(_params), Project.dvc_dataset)],
    executor=executor(),
    resources={"project": Project()},
)
