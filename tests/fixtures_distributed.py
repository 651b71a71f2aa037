"""Running a test script under torchrun: N CPU processes (gloo) on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def torchrun(script: Path, *args: str, nproc: int = 2, cwd: Path | None = None, timeout: int = 300):
    """Run ``script`` with ``args`` in ``nproc`` processes; assert it succeeded, return the finished process.

    The processes use this process's intra-op thread count: CPU kernels may sum in another order with
    fewer threads, and the tests compare against results computed here."""
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    done = subprocess.run(
        [*command, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
