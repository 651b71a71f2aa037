"""Running a stage in several processes: `llm4ctr stage X --nproc N` (or the ``launch`` params) starts
torchrun, whose processes run the same `llm4ctr stage X` command.

The command line re-enters itself: torchrun's processes see ``WORLD_SIZE`` set and run the stage in
process, joined in one process group for the whole stage (models.distributed). dvc.yaml's commands and
Dagster's assets both call `llm4ctr stage`, so both launch the same way. One machine uses torchrun's
standalone rendezvous; several machines meet at ``launch.rdzv_endpoint`` (c10d), each one started
with the same command.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from llm4ctr.errors import ParamsError
from llm4ctr.params import Params


@dataclass(frozen=True)
class Launch:
    """The ``launch`` params: processes per machine, machines, and where they meet."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_id: str = "llm4ctr"

    @classmethod
    def from_params(cls, params: Params, nproc: int | None = None) -> Launch:
        """``launch`` from params; ``nproc`` (the --nproc option) replaces ``launch.nproc_per_node``."""
        values = dict(params.get_path("launch", {}) or {})
        known = sorted(cls.__dataclass_fields__)
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ParamsError(f"{params.source}: launch: unknown keys {unknown}; known: {known}")
        if nproc is not None:
            values["nproc_per_node"] = nproc
        launch = cls(**values)
        for key in ("nproc_per_node", "nnodes"):
            value = getattr(launch, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParamsError(f"{params.source}: launch.{key}: expected a positive integer, got {value!r}")
        if launch.nnodes > 1 and not launch.rdzv_endpoint:
            raise ParamsError(
                f"{params.source}: launch.nnodes is {launch.nnodes}: set launch.rdzv_endpoint (host:port)"
            )
        return launch

    @property
    def processes(self) -> int:
        return self.nproc_per_node * self.nnodes

    def torchrun_args(self) -> list[str]:
        """torchrun's options for this launch."""
        args = ["--nproc_per_node", str(self.nproc_per_node), "--nnodes", str(self.nnodes)]
        if self.nnodes == 1:
            return [*args, "--standalone"]
        return [*args, "--rdzv_backend", "c10d", "--rdzv_endpoint", self.rdzv_endpoint, "--rdzv_id", self.rdzv_id]


def under_torchrun() -> bool:
    """True in a process torchrun started (it sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ


@contextlib.contextmanager
def stage_group() -> Iterator[tuple[int, int]]:
    """(rank, world size) while one stage runs. Under torchrun the stage's one process group is joined
    here, with a timeout long enough for ranks waiting on rank 0; in one process this is (0, 1) and
    torch is not imported (most stages never need it)."""
    if not under_torchrun():
        yield 0, 1
        return
    from models.distributed import process_group

    with process_group(timeout=timedelta(hours=24)) as processes:
        yield processes.rank, processes.world


def relaunch(launch: Launch, argv: list[str]) -> int:
    """Run `llm4ctr <argv>` under torchrun with ``launch``; its exit status (rank failures included).
    ``--nproc`` is left out of the processes' arguments (torchrun's parser would take it for its own
    ``--nproc_per_node``): in them WORLD_SIZE says they are the launched ones."""
    kept, value_next = [], False
    for arg in argv:
        if value_next:
            value_next = False
        elif arg == "--nproc":
            value_next = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", *launch.torchrun_args(), "-m", "orchestration.cli", *kept]
    return subprocess.run(command, check=False).returncode
