"""Where LLM knowledge pays (GitHub issue 17): every method on three split protocols, and a sweep of
knowledge sources on the random and the cold-item split.

    python bench/bench_cold_start.py run [--cells random cold_item ...] [--update]   # resumable, hours
    python bench/bench_cold_start.py rescore [--cells ...]                          # score again, this evaluate
    python bench/bench_cold_start.py report                                         # tables + plot -> docs

``run`` executes each *cell* (a protocol, or a protocol x knowledge source) as a real pipeline run in its
own git clone under artifacts/.work/bench-cold-start/<cell>/, exactly what a user gets from
``make run PROFILE=<protocol>`` (``llm4ctr fetch``, ``dvc add data``, ``dvc exp run`` with the profile's
overrides), with the clone's own code on PYTHONPATH. A killed run resumes: DVC skips the finished
stages and the training stages resume from their checkpoints. The hidden-state store is shared by all
cells (the same item text under another split is computed once). When a cell finishes, its evaluate
results and its stage times are recorded in bench/results/cold_start/<cell>.json, which ``report`` reads.

Cells:
- ``random``, ``cold_item``, ``cold_user``: profiles seeds3 / cold_item / cold_user, every default
  method (the ten zoo models, ClickPrompt w/o and with PLM, LLM4MSR STAR, LEARN), 3 seeds for the
  CTR-only paths, 1 for the with-PLM path, the default profile's epoch and row budgets.
- ``<split>@<source>``: the knowledge-source sweep, LEARN (item embeddings from ``source``) and its
  DCNv2 base, seed 2024, on ``random`` and ``cold_item``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm4ctr.atomic import write_text  # noqa: E402
from llm4ctr.params import read_profile  # noqa: E402

WORK = ROOT / "artifacts" / ".work" / "bench-cold-start"
RECORDS = ROOT / "bench" / "results" / "cold_start"
DATASET = "ml-100k"
PROTOCOLS = {"random": "seeds3", "cold_item": "cold_item", "cold_user": "cold_user"}  # column -> profile
SOURCES = ("SmolLM2-135M-Instruct", "gemma-3-270m", "all-mpnet-base-v2", "all-MiniLM-L6-v2")
SWEEP_SPLITS = ("random", "cold_item")


@dataclass(frozen=True)
class Cell:
    """One pipeline run: its overrides (``-S key=value``) and the DVC stages it needs (all when empty)."""

    name: str
    overrides: tuple[str, ...]
    targets: tuple[str, ...] = ()


def _override(key: str, value) -> str:
    return f"{key}={json.dumps(value) if isinstance(value, list) else value}"


def cells() -> dict[str, Cell]:
    """Every cell, protocols first (the sweep's default-source cells reuse nothing: same seed, fewer stages)."""
    shared = _override("hidden_states.store", str(WORK / "hidden_states"))
    found = {
        name: Cell(name, (*(_override(k, v) for k, v in read_profile(ROOT / "profiles", profile).items()), shared))
        for name, profile in PROTOCOLS.items()
    }
    for split in SWEEP_SPLITS:
        for source in SOURCES:
            name = f"{split}@{source}"
            overrides = (
                f"split.method={split}",
                "train.seeds=[2024]",
                f"hidden_states.item.model={source}",
                'learn.towers=["learn"]',
                shared,
            )
            found[name] = Cell(name, overrides, ("train@dcnv2", "learn@dcnv2_learn"))
    return found


def _run(command: list[str], cwd: Path, log, code: Path | None = None) -> None:
    """Run ``command`` in the cell's clone with ``code`` (default: the clone's code) first on the import path."""
    bin_dir = str(Path(sys.executable).parent)  # the stages' `llm4ctr` commands: this venv's
    env = {**os.environ, "PYTHONPATH": str(code or cwd), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    print("$ " + shlex.join(command), file=log, flush=True)
    done = subprocess.run(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{cwd.name}: `{shlex.join(command)}` failed ({done.returncode}); see {log.name}")


def run_cell(cell: Cell, update: bool) -> dict:
    """Run (or resume) one cell, then score it; return its record."""
    folder = WORK / cell.name
    WORK.mkdir(parents=True, exist_ok=True)
    with (WORK / f"{cell.name}.log").open("a") as log:
        if not (folder / ".git").is_dir():
            _run(["git", "clone", "-q", str(ROOT), str(folder)], WORK, log)
        elif update:
            _run(["git", "pull", "-q", "--ff-only", str(ROOT), "HEAD"], folder, log)
        sets = [a for o in cell.overrides for a in ("-S", o)]
        _run(["llm4ctr", "fetch", *sets], folder, log)
        _run(["dvc", "add", "-q", "data"], folder, log)
        _run(["dvc", "exp", "run", *sets, *cell.targets], folder, log)
    return score_cell(cell)


def score_cell(cell: Cell) -> dict:
    """Score the predictions a cell's run wrote with this checkout's evaluate stage (the same figures for
    every cell, whichever commit trained it) and record them with the cell's stage times."""
    folder = WORK / cell.name
    with (WORK / f"{cell.name}.log").open("a") as log:
        _run(["llm4ctr", "stage", "evaluate"], folder, log, code=ROOT)
    results = json.loads((folder / "artifacts" / "evaluate" / DATASET / "results.json").read_text())
    timings = folder / "artifacts" / "timings" / f"{DATASET}.jsonl"
    record = {
        "cell": cell.name,
        "overrides": list(cell.overrides),
        "targets": list(cell.targets),
        "trained_at": _commit(folder),
        "scored_at": _commit(ROOT),
        "stage_seconds": _stage_seconds(timings),
        "results": results,
    }
    RECORDS.mkdir(parents=True, exist_ok=True)
    write_text(RECORDS / f"{cell.name}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def _commit(folder: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True)
    return done.stdout.strip()


def _stage_seconds(path: Path) -> dict[str, float]:
    """The latest recorded seconds per stage instance of a cell's timings file."""
    latest: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            latest[entry["label"]] = entry["seconds"]
    return latest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("run", "rescore", "report"))
    parser.add_argument("--cells", nargs="*", help="cells to run (default: all, in order)")
    parser.add_argument("--update", action="store_true", help="fast-forward each cell's clone to this HEAD")
    args = parser.parse_args()
    known = cells()
    if args.what in ("run", "rescore"):
        for name in args.cells or list(known):
            if name not in known:
                raise SystemExit(f"unknown cell {name!r}; known: {', '.join(known)}")
            started = time.time()
            run_cell(known[name], args.update) if args.what == "run" else score_cell(known[name])
            print(f"{name}: {args.what} done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
