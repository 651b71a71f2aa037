"""The screenshot script refuses to start Dagster before there is anything to show: a clear error
naming the missing file and the command that makes it, exit status 2, and nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_before_make_run_it_names_the_missing_results_and_writes_nothing(tmp_path: Path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    out = subprocess.run(
        [sys.executable, "-m", "orchestration.screenshots", "--out", str(tmp_path / "shots")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "artifacts/evaluate/ml-100k/results.json: not found; run `make run` first" in out.stderr
    assert not (tmp_path / "shots").exists()
