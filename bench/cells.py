"""Bench cells: one real pipeline run each, in its own git clone, recorded for the results docs.

A cell is what a user gets from ``make run`` with a profile: ``llm4ctr fetch``, ``dvc add data`` and
``dvc exp run`` with the cell's overrides (and DVC targets, when it needs only some stages), in a clone
of this repository's HEAD under the bench's work folder, with the clone's own code on PYTHONPATH. A
killed run resumes: DVC skips the finished stages and the training stages resume from their
checkpoints. When a cell finishes, this checkout's evaluate stage scores its predictions and the
figures go to ``<records>/<cell>.json`` with the cell's stage times. Used by bench_cold_start.py and
bench_gpt4sm.py.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.metrics import relaimpr

ROOT = Path(__file__).resolve().parents[1]
DATASET = "ml-100k"


@dataclass(frozen=True)
class Cell:
    """One pipeline run: its overrides (``-S key=value``) and the DVC stages it needs (all when empty)."""

    name: str
    overrides: tuple[str, ...]
    targets: tuple[str, ...] = ()
    item_fields: tuple[str, ...] = ()  # bench_cold_start: LEARN's item text holds only these fields


def merged(*overrides: str) -> tuple[str, ...]:
    """``key=value`` overrides with one entry per key, the last one given (DVC refuses repeated keys)."""
    last = {o.split("=", 1)[0]: o for o in overrides}
    return tuple(last.values())


def run_command(command: list[str], cwd: Path, log, code: Path | None = None) -> None:
    """Run ``command`` in the cell's clone with ``code`` (default: the clone's code) first on the import path."""
    bin_dir = str(Path(sys.executable).parent)  # the stages' `llm4ctr` commands: this venv's
    env = {**os.environ, "PYTHONPATH": str(code or cwd), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    print("$ " + shlex.join(command), file=log, flush=True)
    done = subprocess.run(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{cwd.name}: `{shlex.join(command)}` failed ({done.returncode}); see {log.name}")


def run_cell(
    cell: Cell, work: Path, records: Path, update: bool, prepare: Callable[[Path], None] | None = None
) -> dict:
    """Run (or resume) one cell in ``work/<cell>``, then score it; return its record. ``prepare`` edits the
    clone before the run (a config the cell's overrides point to)."""
    folder = work / cell.name
    work.mkdir(parents=True, exist_ok=True)
    with (work / f"{cell.name}.log").open("a") as log:
        if not (folder / ".git").is_dir():
            run_command(["git", "clone", "-q", str(ROOT), str(folder)], work, log)
        elif update:
            run_command(["git", "pull", "-q", "--ff-only", str(ROOT), "HEAD"], folder, log)
        if prepare is not None:
            prepare(folder)
        sets = [a for o in cell.overrides for a in ("-S", o)]
        run_command(["llm4ctr", "fetch", *sets], folder, log)
        run_command(["dvc", "add", "-q", "data"], folder, log)
        run_command(["dvc", "exp", "run", *sets, *cell.targets], folder, log)
    return score_cell(cell, work, records)


def run_cells(
    known: dict[str, Cell],
    names: list[str] | None,
    what: str,
    work: Path,
    records: Path,
    update: bool = False,
    prepare: Callable[[Cell], Callable[[Path], None] | None] = lambda cell: None,
) -> None:
    """``what`` = "run" (run or resume, then score) or "rescore" each of ``names`` (default: every known
    cell, in order), with a line per finished cell; ``prepare(cell)`` gives run_cell's ``prepare``."""
    for name in names or list(known):
        if name not in known:
            raise SystemExit(f"unknown cell {name!r}; known: {', '.join(known)}")
        started = time.time()
        if what == "run":
            run_cell(known[name], work, records, update, prepare=prepare(known[name]))
        else:
            score_cell(known[name], work, records)
        print(f"{name}: {what} done in {time.time() - started:.0f} s", flush=True)


def main(
    doc: str,
    known: dict[str, Cell],
    work: Path,
    records: Path,
    report: Callable[[], None],
    prepare: Callable[[Cell], Callable[[Path], None] | None] = lambda cell: None,
) -> None:
    """The command line of a bench made of cells and a report: ``run | rescore | report`` [--cells] [--update]."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("what", choices=("run", "rescore", "report"))
    parser.add_argument("--cells", nargs="*", help="cells to run (default: all, in order)")
    parser.add_argument("--update", action="store_true", help="fast-forward each cell's clone to this HEAD")
    args = parser.parse_args()
    if args.what in ("run", "rescore"):
        run_cells(known, args.cells, args.what, work, records, args.update, prepare=prepare)
    else:
        report()


def score_cell(cell: Cell, work: Path, records: Path) -> dict:
    """Score the predictions a cell's run wrote with this checkout's evaluate stage (the same figures for
    every cell, whichever commit trained it) and record them with the cell's stage times."""
    from llm4ctr.atomic import write_text

    folder = work / cell.name
    with (work / f"{cell.name}.log").open("a") as log:
        run_command(["llm4ctr", "stage", "evaluate"], folder, log, code=ROOT)
    results = json.loads((folder / "artifacts" / "evaluate" / DATASET / "results.json").read_text())
    record = {
        "cell": cell.name,
        "overrides": list(cell.overrides),
        "targets": list(cell.targets),
        "trained_at": _commit(folder),
        "scored_at": _commit(ROOT),
        "stage_seconds": stage_seconds(folder / "artifacts" / "timings" / f"{DATASET}.jsonl"),
        "results": results,
    }
    records.mkdir(parents=True, exist_ok=True)
    write_text(records / f"{cell.name}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def _commit(folder: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True)
    return done.stdout.strip()


def stage_seconds(path: Path) -> dict[str, float]:
    """The latest recorded seconds per stage instance of a cell's timings file."""
    latest: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            latest[entry["label"]] = entry["seconds"]
    return latest


def read_records(records: Path, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """Every recorded cell of ``records`` (file stem -> record), but the names in ``skip``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(records.glob("*.json")) if p.stem not in skip}


def auc_cell(entry: dict | None) -> str:
    """``AUC ± std (seeds)`` of a results entry."""
    if not entry:
        return "-"
    seeds = entry.get("auc_seeds", [])
    spread = f" ± {entry['auc_std']:.4f}" if len(seeds) > 1 else ""
    return f"{entry['auc']:.4f}{spread} ({entry['seeds']})"


def versus(entry: dict | None, base: dict | None) -> str:
    """AUC points over the base, RelaImpr, and whether every seed beats every base seed."""
    if not entry or not base or entry is base:
        return "-"
    points = (entry["auc"] - base["auc"]) * 100
    relative = relaimpr(entry["auc"], base["auc"]) * 100
    apart = ""
    if len(entry.get("auc_seeds", [])) > 1 and len(base.get("auc_seeds", [])) > 1:
        if min(entry["auc_seeds"]) > max(base["auc_seeds"]):
            apart = " ▲"
        elif max(entry["auc_seeds"]) < min(base["auc_seeds"]):
            apart = " ▼"
    return f"{points:+.2f} / {relative:+.2f}%{apart}"
