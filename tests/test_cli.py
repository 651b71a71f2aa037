"""The llm4ctr CLI: --help on every command, project errors as one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["fetch", "stage", "stages", "dvc-yaml", "summary", "profile", "timings", "publish"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_all_commands_are_listed_in_top_level_help():
    result = runner.invoke(app, ["--help"])
    for command in COMMANDS:
        assert command in result.output


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-c", "from orchestration.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_stage_is_a_clean_error(tmp_path):
    (tmp_path / "params.yaml").write_text("data: {name: ml-100k}\n")
    out = _cli("stage", "nope", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown stage 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_params_file_is_named(tmp_path):
    out = _cli("stage", "split", cwd=tmp_path)
    assert out.returncode == 2
    assert "params.yaml: params file not found" in out.stderr


def test_bad_override_is_named(tmp_path):
    (tmp_path / "params.yaml").write_text("data: {name: ml-100k}\n")
    out = _cli("stage", "split", "-S", "nonsense", cwd=tmp_path)
    assert out.returncode == 2
    assert "override 'nonsense' must look like key=value" in out.stderr


def test_missing_upstream_output_names_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "data: {name: ml-100k}\nsplit: {method: random, seed: 1, ratios: [0.8, 0.1, 0.1], tolerance: 0.005}\n"
    )
    out = _cli("stage", "split", cwd=tmp_path)
    assert out.returncode == 2
    assert "artifacts/ingest/ml-100k/interactions.parquet: not found" in out.stderr


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_profiles_override_only_existing_params(profile):
    from pathlib import Path

    from llm4ctr.params import load_params, read_profile

    root = Path(__file__).resolve().parents[1]
    params = load_params(root / "params.yaml")
    overrides = read_profile(root / "profiles", profile)
    missing = [key for key in overrides if params.get_path(key, default=KeyError) is KeyError]
    assert not missing, f"profiles/{profile}.yaml names params that params.yaml lacks: {missing}"
    out = _cli("profile", profile, cwd=root)
    assert out.returncode == 0
    assert "-S 'train.seeds=[2024, 2025, 2026]'" in out.stdout


def test_paper_profile_switches_data_and_split():
    from pathlib import Path

    out = _cli("profile", "paper", cwd=Path(__file__).resolve().parents[1])
    assert "-S data.name=ml-1m" in out.stdout and "-S split.method=global_time" in out.stdout


def test_unknown_profile_lists_the_known_ones(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "paper.yaml").write_text("data.name: ml-1m\n")
    out = _cli("profile", "nope", cwd=tmp_path)
    assert out.returncode == 2
    assert "no such profile (known: paper)" in out.stderr


def test_broken_profile_yaml_names_the_file(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "broken.yaml").write_text("data.name: [ml-1m\n")
    out = _cli("profile", "broken", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "broken.yaml: not valid YAML" in out.stderr


def test_profile_extends_another_and_overrides_it(tmp_path):
    (tmp_path / "params.yaml").write_text("data: {name: ml-100k}\ntrain: {seeds: [1], lr: 0.1}\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "base.yaml").write_text("train.seeds: [1, 2, 3]\ntrain.lr: 0.5\n")
    (tmp_path / "profiles" / "child.yaml").write_text("extends: base\ntrain.lr: 0.2\n")
    out = _cli("profile", "child", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["-S", "'train.seeds=[1,", "2,", "3]'", "-S", "train.lr=0.2"]


def test_profiles_extending_in_a_cycle_are_named(tmp_path):
    (tmp_path / "params.yaml").write_text("data: {name: ml-100k}\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "a.yaml").write_text("extends: b\n")
    (tmp_path / "profiles" / "b.yaml").write_text("extends: [a]\n")
    out = _cli("profile", "a", cwd=tmp_path)
    assert out.returncode == 2 and "cycle (a -> b -> a)" in out.stderr


def test_an_output_another_run_is_writing_is_a_one_line_error(tmp_path):
    import os

    from llm4ctr.atomic import atomic_dir

    (tmp_path / "params.yaml").write_text("data: {name: ml-100k, source: auto}\n")
    with atomic_dir(tmp_path / "data" / "ml-100k"):  # this test process is the other run
        out = _cli("fetch", cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(
        f"error: {tmp_path / 'data' / 'ml-100k'}: being written by another run, pid {os.getpid()} "
    )
