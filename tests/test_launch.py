"""Distributed stages: `llm4ctr stage X --nproc N` runs X under torchrun, from the command line, from
`dvc repro` (the ``launch`` params) and from a Dagster materialization (Dagster Pipes), with the
figures of one process and outputs written by rank 0 alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from assets.registry import STAGES
from assets.tables import read_table
from llm4ctr.errors import ParamsError
from llm4ctr.params import load_params
from orchestration.launch import Launch
from tests.test_pipeline_run import _sh, make_project

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("artifacts") / "train" / "ml-100k" / "dcnv2"


@pytest.fixture(scope="module")
def featured(tmp_path_factory) -> Path:
    """A test project (tests/test_pipeline_run.py) with its features built, then DCNv2 trained in one
    process; each test works in its own copy."""
    project = make_project(ROOT, tmp_path_factory.mktemp("launch") / "project")
    _sh("dvc", "repro", "features", cwd=project)
    _sh("llm4ctr", "stage", "train", "--variant", "dcnv2", cwd=project)
    return project


def fresh_copy(featured: Path, dest: Path) -> Path:
    """``featured`` without the one-process training: outputs, checkpoints and timings gone."""
    shutil.copytree(featured, dest, symlinks=True)
    for folder in ("train", ".work/train", "timings"):
        shutil.rmtree(dest / "artifacts" / folder, ignore_errors=True)
    return dest


def same_predictions(one: Path, two: Path) -> None:
    a, b = read_table(one / OUT / "predictions.parquet"), read_table(two / OUT / "predictions.parquet")
    assert (a[["seed", "split", "row"]].to_numpy() == b[["seed", "split", "row"]].to_numpy()).all()
    np.testing.assert_allclose(a["prob"], b["prob"], atol=1e-5)


def no_rank_leftovers(project: Path) -> None:
    """Rank 1 wrote nothing beside rank 0's output: no temporaries, no second copy."""
    assert sorted(p.name for p in (project / OUT).parent.iterdir()) == ["dcnv2"]


def test_train_stage_in_two_processes_matches_one_and_rank_0_alone_writes(featured: Path, tmp_path: Path):
    project = fresh_copy(featured, tmp_path / "p")
    done = _sh("llm4ctr", "stage", "train", "--variant", "dcnv2", "--nproc", "2", cwd=project)
    assert "stage train@dcnv2 done" in done.stdout and "in 2 processes" in done.stdout
    assert done.stdout.count("stage train@dcnv2 done") == 1  # rank 0 reports, rank 1 is silent
    same_predictions(featured, project)
    no_rank_leftovers(project)
    timings = (project / "artifacts" / "timings" / "ml-100k.jsonl").read_text().splitlines()
    assert sum('"train@dcnv2"' in line for line in timings) == 1


def test_dvc_repro_launches_from_the_launch_params(featured: Path, tmp_path: Path):
    project = fresh_copy(featured, tmp_path / "p")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["launch"]["nproc_per_node"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = _sh("dvc", "repro", "--single-item", "train@dcnv2", cwd=project)
    assert "Running stage 'train@dcnv2'" in done.stdout and "in 2 processes" in done.stdout
    same_predictions(featured, project)
    assert "up to date" in _sh("dvc", "status", "train@dcnv2", cwd=project).stdout


def test_dagster_materializes_a_distributed_stage_through_pipes(featured: Path, tmp_path: Path, monkeypatch):
    import dagster as dg

    from orchestration.definitions import Project, defs

    project = fresh_copy(featured, tmp_path / "p")
    monkeypatch.setenv("LLM4CTR_PROFILE", "two_processes")
    (project / "profiles" / "two_processes.yaml").write_text("launch.nproc_per_node: 2\n")
    result = dg.materialize(
        [defs.get_assets_def(dg.AssetKey(["train", "dcnv2"]))],
        partition_key="ml-100k",
        resources={"project": Project(root=str(project))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (mat,) = result.get_asset_materialization_events()
    metadata = mat.materialization.metadata
    assert metadata["model"].value == "dcnv2" and "seed1_valid_auc" in metadata  # sent back by rank 0
    # the command line ran it (an in-process materialization records no stage time)
    assert '"train@dcnv2"' in (project / "artifacts" / "timings" / "ml-100k.jsonl").read_text()
    same_predictions(featured, project)
    no_rank_leftovers(project)


def test_a_stage_that_runs_in_one_process_refuses_nproc(tmp_path: Path):
    done = _sh("llm4ctr", "stage", "evaluate", "--nproc", "2", cwd=ROOT, check=False)
    assert done.returncode == 2 and "stage 'evaluate' runs in one process" in done.stderr
    assert {s.name for s in STAGES if s.distributed} >= {"train", "clickprompt_pretrain", "learn_tower"}


@pytest.mark.parametrize(
    ("launch", "message"),
    [
        ({"nproc_per_node": 0}, "launch.nproc_per_node: expected a positive integer"),
        ({"nnodes": 2}, "set launch.rdzv_endpoint"),
        ({"gpus": 2}, "unknown keys ['gpus']"),
    ],
)
def test_bad_launch_params_are_named(launch, message):
    params = load_params(ROOT / "params.yaml", {f"launch.{k}": v for k, v in launch.items()})
    with pytest.raises(ParamsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Launch.from_params(params)


def test_torchrun_options_for_one_and_several_machines():
    assert Launch(nproc_per_node=8).torchrun_args() == ["--nproc_per_node", "8", "--nnodes", "1", "--standalone"]
    assert Launch(4, 2, "node0:29500", "job").torchrun_args() == [
        "--nproc_per_node", "4", "--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", "node0:29500",
        "--rdzv_id", "job",
    ]  # fmt: skip


def test_the_launched_processes_get_the_command_without_nproc(monkeypatch):
    import subprocess

    from orchestration import launch

    calls = []

    def run(command, check):
        calls.append(command)
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(subprocess, "run", run)
    argv = ["stage", "train", "--nproc", "2", "--variant", "dcnv2", "--nproc=2", "-S", "train.lr=0.01"]
    assert launch.relaunch(Launch(nproc_per_node=2), argv) == 3
    (command,) = calls
    launched = ["-m", "orchestration.cli", "stage", "train", "--variant", "dcnv2", "-S", "train.lr=0.01"]
    assert command[command.index("-m", 3) :] == launched
