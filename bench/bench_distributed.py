"""One process vs two (torchrun, gloo) for each loop that runs distributed: the same stages with the
default budgets, in a clone of this repository, with real data and real weights.

    python bench/bench_distributed.py run [--nproc 1 2]   # ~10 min on 2 cores -> bench/results/distributed.json
    python bench/bench_distributed.py report              # the table -> docs/DISTRIBUTED.md

Loops: the CTR trainer (train@dcnv2), PA-MLM (clickprompt_pretrain@layerwise, all-MiniLM-L6-v2), the
LEARN tower (learn_tower@id) and the hidden-state pass (hidden_states_item, SmolLM2-135M-Instruct over
every item prompt, from an empty store). Each run starts from nothing (its output, work dirs and store
removed) and reports its own throughput; the two-process run is compared with the one-process run on
what it computed. On a 2-core CPU two processes cannot be faster: the figures are the overhead of
the distributed path (process start, gloo all-reduce, the gathered batches), not a speed-up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cells import run_command  # noqa: E402
from llm4ctr.atomic import replace_block, write_text  # noqa: E402

WORK = ROOT / "artifacts" / ".work" / "bench-distributed"
RECORD = ROOT / "bench" / "results" / "distributed.json"
DOC = ROOT / "docs" / "DISTRIBUTED.md"
DATASET = "ml-100k"
# (stage, variant, what one sample is)
LOOPS = (
    ("train", "dcnv2", "training row"),
    ("clickprompt_pretrain", "layerwise", "training text"),
    ("learn_tower", "id", "training window"),
    ("hidden_states_item", None, "item prompt"),
)


def prepare(clone: Path, log) -> None:
    """A clone of this repository's HEAD with ML-100K and the stages the loops read (split ... prompts)."""
    if not (clone / ".git").is_dir():
        run_command(["git", "clone", "-q", str(ROOT), str(clone)], clone.parent, log)
    else:
        run_command(["git", "pull", "-q", "--ff-only", str(ROOT), "HEAD"], clone, log)
    run_command(["llm4ctr", "fetch"], clone, log)
    run_command(["dvc", "add", "-q", "data"], clone, log)
    run_command(["dvc", "repro", "features", "text", "prompts"], clone, log)


def clear(clone: Path, stage: str, variant: str | None) -> None:
    """Remove what a run of ``stage`` would resume from or reuse: its output, work dirs, the state store."""
    out = clone / "artifacts" / stage / DATASET
    shutil.rmtree(out / variant if variant else out, ignore_errors=True)
    shutil.rmtree(clone / "artifacts" / ".work" / stage, ignore_errors=True)
    if stage.startswith("hidden_states"):
        shutil.rmtree(clone / "artifacts" / ".work" / "hidden_states", ignore_errors=True)


def figures(clone: Path, stage: str, variant: str | None) -> dict:
    """Throughput and what to compare across process counts, read from the stage's outputs."""
    out = clone / "artifacts" / stage / DATASET / (variant or "")
    if stage == "train":
        import pandas as pd

        summary = json.loads((out / "summary.json").read_text())
        (fit,) = summary["seeds"].values()
        probs = pd.read_parquet(out / "predictions.parquet")["prob"].to_numpy()
        return {"samples_per_s": fit["train_samples_per_s"], "valid_auc": fit["valid_auc"], "compare": probs}
    if stage == "clickprompt_pretrain":
        summary = json.loads((out / "summary.json").read_text())
        return {"samples_per_s": summary["samples_per_s"], "loss_last": summary["loss_last"]}
    if stage == "learn_tower":
        summary = json.loads((out / "retrieval.json").read_text())
        (seed,) = summary["seeds"].values()
        per_epoch = round(seed["train_seconds"] / seed["epochs"], 2)
        return {"seconds_per_epoch": per_epoch, "test_ndcg@10": seed["test"]["ndcg@10"]}
    from safetensors.torch import load_file

    states = load_file(out / "states.safetensors")["states"].numpy()
    return {"samples": len(states), "compare": states}


def run(nprocs: list[int]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    clone = WORK / "clone"
    rows, compared = [], {}
    with (WORK / "bench.log").open("a") as log:
        prepare(clone, log)
        for stage, variant, sample in LOOPS:
            for nproc in nprocs:
                clear(clone, stage, variant)
                chosen = ["--variant", variant] if variant else []
                command = ["llm4ctr", "stage", stage, *chosen, "--nproc", str(nproc)]
                load = os.getloadavg()[0]
                started = time.perf_counter()
                run_command(command, clone, log)
                seconds = time.perf_counter() - started
                found = figures(clone, stage, variant)
                if "samples" in found:  # the hidden-state pass: every prompt once, in the stage's time
                    found["samples_per_s"] = round(found.pop("samples") / seconds, 2)
                vector = found.pop("compare", None)
                if vector is not None:
                    compared.setdefault(stage, {})[nproc] = np.asarray(vector)
                    base = compared[stage][nprocs[0]]
                    found["max_abs_diff_vs_1"] = float(np.abs(vector - base).max()) if nproc != nprocs[0] else 0.0
                rows.append({"loop": f"{stage}@{variant}" if variant else stage, "sample": sample, "nproc": nproc,
                             "stage_seconds": round(seconds, 1), "load_before": round(load, 2), **found})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    record = {
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "cores": os.cpu_count(),
        "torch_threads_per_process": "torch default (1 under torchrun with several processes: OMP_NUM_THREADS=1)",
        "rows": rows,
    }
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    write_text(RECORD, json.dumps(record, indent=1) + "\n")


def report() -> None:
    record = json.loads(RECORD.read_text())
    lines = [
        f"Commit {record['commit']}, {record['cores']} cores, `python bench/bench_distributed.py run`; "
        "load = the 1-minute load average when the run started:",
        "",
        "| loop | processes | stage s | samples/s | s/epoch | result | vs 1 process (max abs diff) | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        result = next((f"{k} {r[k]:.6g}" for k in ("valid_auc", "loss_last", "test_ndcg@10") if k in r), "-")
        diff = r.get("max_abs_diff_vs_1")
        lines.append(
            f"| {r['loop']} | {r['nproc']} | {r['stage_seconds']} | {r.get('samples_per_s', '-')} | "
            f"{r.get('seconds_per_epoch', '-')} | {result} | {'-' if diff is None else f'{diff:.2e}'} | "
            f"{r['load_before']} |"
        )
    replace_block(DOC, "distributed bench", "\n".join(lines) + "\n")
    print(DOC.read_text())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("run", "report"))
    parser.add_argument("--nproc", nargs="*", type=int, default=[1, 2], help="process counts (the first is the base)")
    args = parser.parse_args()
    run(args.nproc) if args.what == "run" else report()
