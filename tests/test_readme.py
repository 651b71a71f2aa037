"""The README's commands work as shown, in a new shell.

Every command line of the README (its shell blocks and the backticked commands of its tables) is
checked the way a newcomer would meet it: a `make` target must exist (`make -n`), and a command of
the environment (`llm4ctr`, `dvc`, `dagster`, `bentoml`) must resolve and accept its subcommand and
options in a new login-free shell that only ran the README's `source .venv/bin/activate`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ACTIVATE = "source .venv/bin/activate"
ENV_TOOLS = ("llm4ctr", "dvc", "dagster", "bentoml")


def readme_commands(text: str) -> list[str]:
    """Command lines of the README: lines of ```bash blocks and backticked commands in table rows."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        commands += [
            line.split("  #")[0].strip()
            for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    for row in (line for line in text.splitlines() if line.startswith("|")):
        commands += [c for c in re.findall(r"`([^`]+)`", row) if c.split()[0] in ("make", *ENV_TOOLS)]
    return commands


def new_shell(command: str) -> subprocess.CompletedProcess:
    """``command`` in a new bash after the README's activation line, with none of this process's venv."""
    venv = Path(sys.prefix)
    activate = ACTIVATE if venv == ROOT / ".venv" else f"source {shlex.quote(str(venv / 'bin' / 'activate'))}"
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(
        ["bash", "-c", f"{activate} && {command}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def test_readme_says_how_to_enter_the_environment():
    assert ACTIVATE in README.read_text(encoding="utf-8")


def test_readme_commands_are_found():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert any(c.startswith("make run") for c in commands) and any(c.startswith("dvc ") for c in commands)


@pytest.mark.parametrize(
    "command", sorted({c for c in readme_commands(README.read_text(encoding="utf-8")) if c.startswith("make ")})
)
def test_readme_make_targets_exist(command):
    out = subprocess.run(
        [*shlex.split(command)[:1], "-n", *shlex.split(command)[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"`{command}`: {out.stderr}"


@pytest.mark.parametrize(
    "command", sorted({c for c in readme_commands(README.read_text(encoding="utf-8")) if c.split()[0] in ENV_TOOLS})
)
def test_readme_environment_commands_run_in_a_new_shell(command):
    """The program resolves after activation and takes the subcommand and options as written."""
    out = new_shell(f"{command} --help")
    assert out.returncode == 0, f"`{command}` in a new shell:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def test_dvc_stage_commands_find_llm4ctr_in_a_new_shell(tmp_path):
    """dvc.yaml's commands call `llm4ctr`: after the activation line, `dvc repro` in a new shell runs them."""
    from tests.test_pipeline_run import make_project

    project = make_project(ROOT, tmp_path / "project")
    out = new_shell(f"cd {shlex.quote(str(project))} && dvc repro ingest")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Running stage 'ingest'" in out.stdout


def test_the_dagster_instance_config_turns_telemetry_and_the_newsletter_dialog_off(tmp_path):
    """`make ui` writes $DAGSTER_HOME/dagster.yaml (keys added to a user's existing file, never replaced)."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("run_monitoring:\n  enabled: true\n")
    for _ in range(2):  # twice: the keys are added once
        out = subprocess.run(
            ["make", "-s", "dagster-home", f"DAGSTER_HOME={home}"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
    text = (home / "dagster.yaml").read_text()
    assert text.startswith("run_monitoring:\n  enabled: true\n") and text.count("nux:") == 1
    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.nux_enabled is False and instance.telemetry_enabled is False
