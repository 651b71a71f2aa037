"""Wall times of pipeline runs, and the budget the default profile is held to.

Every ``llm4ctr stage`` (and ``llm4ctr fetch``) appends one JSON line per finished stage instance to
``artifacts/timings/<dataset>.jsonl``: its label (``train@fgcnn``), seconds, finish time and the
digest of the params the stage declares. ``make run`` adds the venv build and its own total. The
summary at the end of ``make run`` reads this record; ``llm4ctr publish timings`` copies the latest
entries of a fresh-clone run into ``docs/timings_default.json`` and the README's timing table.

The budget: a fresh clone must finish ``make run`` (venv and model downloads included) within
``BUDGET_S`` on a 2-core machine. Machines of that size differ and methods are still being added, so
the published fresh run (venv build plus ``make run``) must stay within ``HEADROOM`` of the budget.
:func:`budget_problems` is what the test suite checks: every stage instance the default params
produce has a published time measured under exactly its current params (change a size knob and the
stage must be re-measured), and the total fits.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from llm4ctr.atomic import replace_block, write_text
from llm4ctr.env import cores
from llm4ctr.errors import Llm4ctrError
from llm4ctr.params import Params

BUDGET_S = 1800
HEADROOM = 0.75  # the published fresh run may use this share of BUDGET_S
PUBLISHED = "docs/timings_default.json"
README = "README.md"
VENV = "venv"  # labels make run records besides the stages
TOTAL = "make run"
FETCH = "fetch"


def record_path(root: Path, dataset: str) -> Path:
    """artifacts/timings/<dataset>.jsonl (outside every stage's outputs: never a DVC output)."""
    return Path(root) / "artifacts" / "timings" / f"{dataset}.jsonl"


def stage_label(stage: str, variant: str | None) -> str:
    """DVC's name of a stage instance: ``train@fgcnn``, or ``ingest`` for a stage without fan-out."""
    return f"{stage}@{variant}" if variant else stage


def record(root: Path, dataset: str, label: str, seconds: float, params_digest: str | None = None) -> None:
    """Append one finished step to the dataset's record (one short line: appends do not interleave)."""
    path = record_path(root, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "label": label,
        "seconds": round(float(seconds), 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "params_digest": params_digest,
    }
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def latest(root: Path, dataset: str) -> dict[str, dict[str, Any]]:
    """label -> its most recent entry, in the order the labels last finished."""
    path = record_path(root, dataset)
    if not path.is_file():
        return {}
    entries: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise Llm4ctrError(f"{path}, line {number}: not a JSON timing entry: {line[:80]!r}") from None
        entries.pop(entry["label"], None)
        entries[entry["label"]] = entry
    return entries


def default_instances(params: Params) -> dict[str, str]:
    """Every stage instance ``dvc repro`` runs under ``params``: label -> digest of its declared params."""
    from assets.registry import STAGES

    return {stage_label(s.name, v): params.digest(s.params) for s in STAGES for v in s.variants(params)}


def stage_total(entries: dict[str, dict[str, Any]]) -> float:
    return sum(e["seconds"] for label, e in entries.items() if label not in (VENV, TOTAL))


def by_stage(entries: dict[str, dict[str, Any]]) -> list[tuple[str, int, float, str]]:
    """(stage, instances, seconds, slowest instance) per stage, in run order."""
    groups: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for label, entry in entries.items():
        if label not in (VENV, TOTAL):
            groups[label.partition("@")[0]].append((label, entry["seconds"]))
    rows = []
    for name, members in groups.items():
        slowest = max(members, key=lambda m: m[1])
        rows.append(
            (
                name,
                len(members),
                sum(s for _, s in members),
                f"{slowest[0].partition('@')[2]} {slowest[1]:.0f} s" if len(members) > 1 else "",
            )
        )
    return rows


def fresh_total(entries: dict[str, dict[str, Any]]) -> float | None:
    """What a newcomer waits for: the venv build plus ``make run`` (None before a ``make run`` finished)."""
    if TOTAL not in entries:
        return None
    return entries[TOTAL]["seconds"] + entries.get(VENV, {}).get("seconds", 0.0)


def markdown(entries: dict[str, dict[str, Any]]) -> str:
    """The timing table: one row per stage (fan-out instances summed), then the venv and the totals."""
    lines = ["| step | instances | seconds | slowest instance |", "|---|---|---|---|"]
    lines += [f"| {name} | {n} | {seconds:.0f} | {slowest} |" for name, n, seconds, slowest in by_stage(entries)]
    lines.append(f"| all stages and fetch | | {stage_total(entries):.0f} | |")
    if TOTAL in entries:
        lines.append(f"| make run, wall time (fetch, dvc, stages, summary) | | {entries[TOTAL]['seconds']:.0f} | |")
    if VENV in entries:
        lines.append(f"| venv build (first run only) | | {entries[VENV]['seconds']:.0f} | |")
    if VENV in entries and TOTAL in entries:
        lines.append(f"| **fresh clone: venv + make run** | | **{fresh_total(entries):.0f}** | |")
    return "\n".join(lines) + "\n"


def budget_problems(published: dict[str, Any], params: Params) -> list[str]:
    """Why ``published`` does not show that ``params`` (the default profile) fits its budget; [] when it does."""
    problems = []
    stages = published.get("steps", {})
    for label, digest in default_instances(params).items():
        if label not in stages:
            problems.append(
                f"{label}: no published time (run it in a fresh `make run`, then `llm4ctr publish timings`)"
            )
        elif stages[label].get("params_digest") != digest:
            problems.append(
                f"{label}: published time was measured under other params (digest "
                f"{stages[label].get('params_digest')} vs {digest}); re-measure it"
            )
    total = fresh_total(stages)
    if total is None:
        problems.append(f"no '{TOTAL}' total in {PUBLISHED}")
    elif VENV not in stages:
        problems.append(f"no '{VENV}' time in {PUBLISHED}: publish a run from a fresh clone (venv built by make run)")
    elif total > BUDGET_S * HEADROOM:
        problems.append(
            f"a fresh clone took {total:.0f} s (venv + make run), over {HEADROOM:.0%} of the "
            f"{BUDGET_S} s budget ({BUDGET_S * HEADROOM:.0f} s)"
        )
    return problems


def publish(root: Path, params: Params) -> Path:
    """Write the latest recorded run to docs/timings_default.json and the README's table.

    Refuses (naming each reason) when the record does not cover the default profile as it is now,
    so the published figures are always those of the params a newcomer runs.
    """
    dataset = params.get_path("data.name")
    entries = latest(root, dataset)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    published = {
        "dataset": dataset,
        "commit": commit or None,
        "measured": entries.get(TOTAL, {}).get("finished"),
        "machine": {"cores": cores(), "python": platform.python_version()},
        "budget_s": BUDGET_S,
        "headroom": HEADROOM,
        "steps": entries,
    }
    problems = budget_problems(published, params)
    if problems:
        raise Llm4ctrError(
            f"{record_path(root, dataset)} does not show the default profile within budget:\n  " + "\n  ".join(problems)
        )
    write_text(Path(root) / PUBLISHED, json.dumps(published, indent=1) + "\n")
    replace_block(Path(root) / README, "timings default", markdown(entries))
    return Path(root) / PUBLISHED
