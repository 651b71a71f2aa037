"""The pipeline end to end on generated ML-100K files: `dvc repro` and Dagster run the same stages.

A temporary copy of the project gets a generated raw dataset; `dvc repro` must build ingest and
split, a second `dvc repro` must do nothing, and a bad raw file must stop the pipeline with a named
error, the last good outputs restorable with `dvc checkout`. DVC's run-cache restores a param value
run before and serves a fresh clone through a remote; metrics and training curves stay readable per
commit. Dagster materializes the same assets with their blocking GX checks, and the two runners
share one state (dvc.lock).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from assets.registry import SCORED
from tests.fixtures_raw import ML_ITEMS, ML_USERS, tree_bytes, write_ml100k_atomic

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)


def generated_ratings(n_rows: int = 240) -> list[tuple]:
    """Enough distinct (user, item, timestamp) rows for an 8:1:1 split within half a point."""
    users = [u[0] for u in ML_USERS]
    items = [i[0] for i in ML_ITEMS]
    return [
        (users[k % len(users)], items[(k // len(users)) % len(items)], 1 + (k * 7) % 5, 881250000 + 37 * k)
        for k in range(n_rows)
    ]


def _sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def shrink_params(path: Path) -> None:
    """Two zoo models, one seed, two epochs: a small DAG on the generated data."""
    from llm4ctr.params import load_params

    params = dict(
        load_params(
            path,
            {
                "ctr.models": ["fm", "dcnv2"],
                "train.seeds": [1],
                "train.max_epochs": 2,
                "train.progress": False,
                "evaluate.base_model": "fm",
            },
        )
    )
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# State a run leaves in a checkout (and that a fresh clone may or may not have): never copied, so a
# test project is the same whether the suite runs on a clean clone or right after `make run`.
RUN_STATE = ("dvc.lock", "data.dvc")


def make_project(source: Path, dest: Path) -> Path:
    """A git+dvc copy of ``source``'s source files (what git lists, less RUN_STATE) in ``dest``, with
    a generated ml-100k under data/ and shrunken params, committed."""
    files = subprocess.run(  # the project's files as a fresh clone (plus not-yet-committed ones) has them
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if (source / rel).is_file() and rel not in RUN_STATE:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest / rel)
    shrink_params(dest / "params.yaml")
    write_ml100k_atomic(dest / "data" / "ml-100k", generated_ratings())
    _sh("git", "init", "-q", cwd=dest)
    for key, value in (("user.name", "t"), ("user.email", "t@t")):  # `dvc exp run` commits too
        _sh("git", "config", key, value, cwd=dest)
    _sh("dvc", "add", "-q", "data", cwd=dest)
    _sh("git", "add", "-A", cwd=dest)
    _sh("git", "commit", "-qm", "fixture", cwd=dest)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git+dvc copy of this checkout's source files with a generated ml-100k under data/."""
    return make_project(ROOT, tmp_path / "project")


# The data stages through `dvc repro`; the model stages run in process in test_train_evaluate.py (the
# LLM stages need real weights, which the slow tests fetch).
TARGET = "features"


def test_dvc_repro_builds_then_does_nothing_then_stops_on_bad_input(project: Path):
    first = _sh("dvc", "repro", TARGET, cwd=project)
    for stage in ("ingest", "split", "features"):
        assert f"Running stage '{stage}'" in first.stdout
    split_dir = project / "artifacts" / "split" / "ml-100k"
    assert sorted(p.name for p in split_dir.iterdir()) == [
        "gx_result.json",
        "summary.json",
        "test.parquet",
        "train.parquet",
        "valid.parquet",
    ]
    from orchestration.timings import latest

    recorded = latest(project, "ml-100k")  # every stage run leaves its wall time and params digest
    assert list(recorded) == ["ingest", "split", "features"] and all(e["params_digest"] for e in recorded.values())
    changed = _sh("git", "status", "--porcelain", cwd=project).stdout.splitlines()
    assert changed == ["?? dvc.lock"], changed  # a run changes no tracked file but DVC's lock
    second = _sh("dvc", "repro", TARGET, cwd=project)
    assert "Running stage" not in second.stdout
    assert "up to date" in _sh("dvc", "status", TARGET, cwd=project).stdout
    # The locks and temporaries llm4ctr.atomic keeps beside an output being written (and a killed run
    # leaves) sit inside folders DVC hashes: data/ (fetch), and a dependency that holds per-model
    # outputs such as artifacts/train/<ds>/ (played here by artifacts/ingest/ml-100k/).
    leftovers = [
        project / "data" / ".lock-ml-100k",
        project / "data" / ".tmp-ml-100k-abcdefgh" / "x",
        split_dir.parent.parent / "ingest" / "ml-100k" / ".tmp-old-fm-123" / "x",
        split_dir.parent.parent / "ingest" / "ml-100k" / ".lock-fm",
    ]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_text("ignored")
    assert "up to date" in _sh("dvc", "status", "--with-deps", TARGET, "data.dvc", cwd=project).stdout
    for path in leftovers:
        path.unlink()

    good = tree_bytes(project / "artifacts")
    inter = project / "data" / "ml-100k" / "ml-100k.inter"
    inter.write_text(inter.read_text().replace("\t3\t", "\tthree\t", 1))
    _sh("dvc", "add", "-q", "data", cwd=project)
    bad = _sh("dvc", "repro", TARGET, cwd=project, check=False)
    assert bad.returncode != 0
    assert "ml-100k.inter" in bad.stderr and "three" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not list((project / "artifacts").glob("**/.tmp-*"))  # nothing partial
    _sh("dvc", "checkout", "ingest", cwd=project)  # DVC removed ingest's output before running it
    assert tree_bytes(project / "artifacts") == good  # the last good outputs, restored from DVC's cache


def test_a_split_param_change_reruns_downstream_and_switching_back_restores_from_the_run_cache(project: Path):
    """random -> user_time reruns split and features only; back to random restores both from DVC's
    run-cache instead of running them."""
    _sh("dvc", "repro", TARGET, cwd=project)
    ingest_before, first = tree_bytes(project / "artifacts" / "ingest"), tree_bytes(project / "artifacts" / "split")
    out = _sh("dvc", "exp", "run", "-S", "split.method=user_time", TARGET, cwd=project)
    assert "Running stage 'split'" in out.stdout and "Running stage 'features'" in out.stdout
    assert "Running stage 'ingest'" not in out.stdout
    assert tree_bytes(project / "artifacts" / "ingest") == ingest_before
    assert tree_bytes(project / "artifacts" / "split") != first
    back = _sh("dvc", "exp", "run", "-S", "split.method=random", TARGET, cwd=project)
    assert "Running stage" not in back.stdout
    assert "Stage 'split' is cached - skipping run" in back.stdout and "Stage 'features' is cached" in back.stdout
    assert tree_bytes(project / "artifacts" / "split") == first


def test_a_clone_pulls_the_run_cache_from_a_remote_and_runs_nothing(project: Path, tmp_path: Path):
    """Clone A runs and pushes data, outputs and run records to a local remote; in a fresh clone B (no
    data, no dvc.lock) `dvc repro --pull`, as `make run` runs it, pulls the data and each stage's run
    record and outputs, byte for byte, without running a stage."""
    remote = tmp_path / "remote"
    for clone in (project, tmp_path / "b"):
        if clone != project:
            _sh("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
        _sh("dvc", "remote", "add", "--local", "--default", "local", str(remote), cwd=clone)
        if clone == project:
            _sh("dvc", "repro", TARGET, cwd=project)
            _sh("dvc", "push", "--run-cache", "--with-deps", TARGET, cwd=project)  # what ran: data, 3 stages
    b = tmp_path / "b"
    assert not (b / "data" / "ml-100k").exists() and not (b / "artifacts").exists()
    out = _sh("dvc", "repro", "--pull", TARGET, cwd=b)
    assert "Running stage" not in out.stdout and "Stage 'features' is cached - skipping run" in out.stdout
    for stage in ("ingest", "split", "features"):
        assert tree_bytes(b / "artifacts" / stage) == tree_bytes(project / "artifacts" / stage), stage
    assert "up to date" in _sh("dvc", "status", TARGET, cwd=b).stdout


def test_committed_metrics_stay_readable_and_a_copy_of_the_checkout_starts_clean(project: Path, tmp_path: Path):
    """The evaluate figures live in its cached output: `dvc metrics diff HEAD` reads the committed run's
    from the DVC cache (through dvc.lock) while the workspace holds another run's; `dvc plots show`
    draws the training curves. Then the checkout that has run (dvc.lock listing evaluate, artifacts, a
    DVC cache) yields the same test project as a fresh clone: a copied dvc.lock once made `dvc exp run`
    fail there with "failed to load directory ('artifacts', 'evaluate', ...)"."""
    import json

    _sh("dvc", "repro", "train@fm", "train@dcnv2", cwd=project)
    for stage in set(SCORED) - {"train"}:  # evaluate's other inputs (the LLM methods need real weights)
        (project / "artifacts" / stage / "ml-100k").mkdir(parents=True)
    _sh("dvc", "repro", "--single-item", "evaluate", cwd=project)
    _sh("git", "add", "dvc.lock", cwd=project)
    _sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run 1", cwd=project)
    shown = json.loads(_sh("dvc", "metrics", "show", "--json", cwd=project).stdout)
    figures = shown[""]["data"]["artifacts/evaluate/ml-100k/metrics.json"]["data"]
    assert set(figures) == {"fm", "dcnv2"} and 0 < figures["dcnv2"]["auc"] < 1
    curves = shown[""]["data"]["artifacts/curves/train/ml-100k/dcnv2/metrics.json"]["data"]
    assert 0 < curves["seed1"]["valid_auc"] < 1  # the training curves' last values
    plots = json.loads(_sh("dvc", "plots", "show", "--json", cwd=project).stdout)
    rendered = {name for name, shown in plots["data"].items() if shown and shown[0]["type"] == "vega"}
    for model in ("fm", "dcnv2"):  # a validation-AUC curve per zoo model, beside ROC and calibration
        assert f"artifacts/curves/train/ml-100k/{model}/plots/metrics/seed1/valid_auc.tsv" in rendered
    assert any(name.startswith("artifacts/evaluate/ml-100k/roc") for name in rendered)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["base_model"] = "dcnv2"  # RelaImpr against another base: other figures, same models
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh("dvc", "repro", "--single-item", "evaluate", cwd=project)
    diff = json.loads(_sh("dvc", "metrics", "diff", "HEAD", "--json", cwd=project).stdout)
    changed = diff["artifacts/evaluate/ml-100k/metrics.json"]
    assert changed["fm.relaimpr"]["old"] == 0 and changed["fm.relaimpr"]["new"] != 0
    assert changed["dcnv2.relaimpr"]["new"] == 0

    copy = make_project(project, tmp_path / "copy")
    assert not (copy / "artifacts").exists() and not (copy / "dvc.lock").exists()
    out = _sh("dvc", "exp", "run", "-S", "split.method=user_time", TARGET, cwd=copy)
    assert "Running stage 'ingest'" in out.stdout and "Running stage 'features'" in out.stdout


def test_dagster_check_fails_on_tampered_split(project: Path):
    import dagster as dg
    import pandas as pd

    from orchestration.definitions import Project, defs

    resources = {"project": Project(root=str(project))}
    dg.materialize(
        [defs.get_assets_def("ingest"), defs.get_assets_def("split")],
        partition_key="ml-100k",
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    folder = project / "artifacts" / "split" / "ml-100k"
    train, test = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "test.parquet")
    pd.concat([test, train.head(3)]).to_parquet(folder / "test.parquet", index=False)
    check = next(c for c in defs.asset_checks if "split_gx_suite" in {k.name for k in c.check_keys})
    result = dg.materialize(
        [defs.get_assets_def("split"), check],
        selection=dg.AssetSelection.checks(check),
        tags={"dagster/partition": "ml-100k"},  # the check alone, on a dataset partition
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "test" in evaluation.metadata["summary"].value
    index = Path(evaluation.metadata["data_docs"].path)  # GX Data Docs of this validation, linked from the check
    assert (
        index
        == project.resolve()
        / "artifacts"
        / "gx"
        / "ml-100k"
        / "uncommitted"
        / "data_docs"
        / "local_site"
        / "index.html"
    )
    assert index.is_file() and all(
        (project / page).is_file() for page in evaluation.metadata["data_docs_pages"].data.values()
    )


def test_dagster_materializes_with_blocking_checks_and_shares_one_state_with_dvc(project: Path):
    """The partition's assets materialize with their GX checks passing; the materialization is recorded
    in DVC (`dvc status` clean, `dvc repro` runs nothing); what `dvc exp run` re-ran afterwards, the
    dvc.lock sensor reports to Dagster, and nothing else."""
    import dagster as dg

    from orchestration.definitions import Project, defs

    instance = dg.DagsterInstance.ephemeral()
    resources = {"project": Project(root=str(project))}
    result = dg.materialize(
        [*(defs.get_assets_def(name) for name in ("ingest", "split", "features")), *defs.asset_checks],
        partition_key="ml-100k",
        resources=resources,
        instance=instance,
    )
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"ingest_gx_suite", "split_gx_suite"}  # blocking GX checks, passed
    assert all(e.passed and e.partition == "ml-100k" for e in evaluations.values())  # a history per dataset
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    meta = mats["ingest"].materialization.metadata
    assert meta["rows"].value == 240 and meta["users"].value == 4
    assert "per_scenario" in meta and meta["dagster/row_count"].value == 240
    assert meta["preview"].value.records[0].data["user_id"] and "label" in {
        c.name for c in meta["preview"].value.schema.columns
    }
    for event in result.get_asset_materialization_events():
        name = event.asset_key.to_user_string()
        assert event.materialization.metadata["dvc"].value == f"recorded in dvc.lock as {name}"
    assert "Data and pipelines are up to date" in _sh("dvc", "status", TARGET, cwd=project).stdout
    assert "Running stage" not in _sh("dvc", "repro", TARGET, cwd=project).stdout

    sensor = defs.get_sensor_def("dvc_lock_observer")

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return sensor(context)

    first = tick(None)  # dvc.lock holds what Dagster itself materialized: nothing to report
    assert first.asset_events == [] and first.cursor
    _sh("dvc", "exp", "run", "-S", "split.method=user_time", TARGET, cwd=project)
    second = tick(first.cursor)
    reported = {e.asset_key.to_user_string(): e.partition for e in second.asset_events}
    assert reported == {"split": "ml-100k", "features": "ml-100k"}
    assert isinstance(tick(second.cursor), dg.SkipReason)
