"""Benchmark of the hidden-state cache on the real ML-100K split with SmolLM2-135M-Instruct.

    python bench/bench_hidden_states.py [--users 500] [--work /tmp/llm4ctr-bench-hs]

Needs artifacts/split/ml-100k/ (``llm4ctr stage ingest && llm4ctr stage split``). Each phase runs in
its own Python process so that its peak RSS is its own:

1. prompts  the prompts stage on the real split (943 users, 3 scenarios, 1,682 items);
2. naive    the first N user prompts one at a time through AutoModelForCausalLM with
            output_hidden_states=True, last layer at the last token (how LLM4MSR's code reads states);
3. ours     the same N prompts through ``models.hidden_states.cache_states`` into an empty store;
            the states are compared with the naive ones;
4. full     the three hidden-state stages (user, scenario, item) into an empty store;
5. cached   the three stages again on the full store: nothing is computed.

Wall and process CPU time are both recorded, with the load average: this machine is shared, and CPU
time is the steadier figure when other jobs compete for the two cores. Results go to
docs/RESULTS_HIDDEN_STATES.md (and bench/results/hidden_states.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm4ctr.atomic import replace_block, write_text  # noqa: E402
from llm4ctr.env import apply_defaults  # noqa: E402
from llm4ctr.params import load_params  # noqa: E402

DATASET = "ml-100k"
MODEL = "SmolLM2-135M-Instruct"


def params_for(work: Path, store: str):
    """params.yaml with the bench's dataset, the default LLM and a store under ``work``."""
    params = load_params(ROOT / "params.yaml")
    params["data"]["name"] = DATASET
    params["llm"]["name"] = MODEL
    params["prompts"]["config"] = str(ROOT / params["prompts"]["config"])
    params["hidden_states"]["store"] = str(work / store)
    return params


class Clock:
    """Wall and process CPU seconds since creation, with the 1-minute load average at both ends."""

    def __init__(self):
        self.wall, self.cpu, self.load = time.perf_counter(), time.process_time(), os.getloadavg()[0]

    def read(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self.wall, 2),
            "cpu_s": round(time.process_time() - self.cpu, 2),
            "load_start": round(self.load, 2),
            "load_end": round(os.getloadavg()[0], 2),
        }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def user_texts(work: Path, n: int) -> list[str]:
    from assets.tables import read_table

    return read_table(work / "artifacts" / "prompts" / DATASET / "user.parquet")["text"].tolist()[:n]


# ----------------------------------------------------------------------------------------------
# Phases (each runs in a child process)
# ----------------------------------------------------------------------------------------------


def phase_prompts(work: Path, args) -> dict[str, Any]:
    from assets import prompts

    split = work / "artifacts" / "split" / DATASET
    split.parent.mkdir(parents=True, exist_ok=True)
    if not split.exists():
        split.symlink_to(ROOT / "artifacts" / "split" / DATASET, target_is_directory=True)
    clock = Clock()
    meta = prompts.run(params_for(work, "unused"), work)
    return {**clock.read(), **{k: v for k, v in meta.items() if k.endswith(("_count", "_mean", "_max"))}}


def phase_naive(work: Path, args) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assets.pretrained import resolve

    texts = user_texts(work, args.users)
    folder = resolve(MODEL)
    clock = Clock()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    loaded = clock.read()["wall_s"]
    states, tokens = [], 0
    with torch.no_grad():
        for text in texts:
            batch = tokenizer(text, return_tensors="pt")
            tokens += batch["input_ids"].shape[1]
            states.append(model(**batch, output_hidden_states=True).hidden_states[-1][0, -1])
    torch.save(torch.stack(states), work / "naive_states.pt")
    figures = clock.read()
    return {
        **figures,
        "load_s": loaded,
        "texts": len(texts),
        "tokens": tokens,
        "tokens_per_s": round(tokens / figures["wall_s"], 1),
    }


def phase_ours(work: Path, args) -> dict[str, Any]:
    import shutil

    import torch

    from assets.hidden_states import encoder_for
    from models.hidden_states import cache_states, read_states

    params = params_for(work, "store-ours")
    shutil.rmtree(work / "store-ours", ignore_errors=True)
    texts = user_texts(work, args.users)
    encoder = encoder_for(params, "user")
    clock = Clock()
    run = cache_states(
        encoder, texts, "bench", work / "store-ours",
        batch_size=params["hidden_states"]["batch_size"], shard_size=params["hidden_states"]["shard_size"],
    )  # fmt: skip
    figures = clock.read()
    states = read_states(run)
    naive = torch.load(work / "naive_states.pt")
    return {
        **figures, "load_s": round(run.load_seconds, 2), "compute_s": round(run.compute_seconds, 2),
        "texts": len(texts), "tokens": run.tokens_here, "tokens_per_s": round(run.tokens_here / figures["wall_s"], 1),
        "max_abs_diff_vs_naive": float((states - naive).abs().max()),
        "batch_size": params["hidden_states"]["batch_size"],
    }  # fmt: skip


def _stages(work: Path, store: str) -> dict[str, Any]:
    from assets import hidden_states

    params = params_for(work, store)
    out: dict[str, Any] = {}
    total = Clock()
    for kind in ("user", "scenario", "item"):
        clock = Clock()
        meta = hidden_states.run_kind(params, work, kind)
        keep = ("count", "dim", "cache_hits", "cache_misses", "tokens_mean", "tokens_max", "truncated", "tokens_per_s")
        out[kind] = {**clock.read(), **{k: meta[k] for k in keep}, "token_histogram": meta["token_histogram"]}
    return {"total": total.read(), **out}


def phase_full(work: Path, args) -> dict[str, Any]:
    import shutil

    shutil.rmtree(work / "store-full", ignore_errors=True)
    return _stages(work, "store-full")


def phase_cached(work: Path, args) -> dict[str, Any]:
    return _stages(work, "store-full")


PHASES = {
    "prompts": phase_prompts,
    "naive": phase_naive,
    "ours": phase_ours,
    "full": phase_full,
    "cached": phase_cached,
}
ORDER = tuple(PHASES)  # "cached" re-runs the store "full" built; "ours" compares with "naive"


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def child(phase: str, work: Path, args) -> dict[str, Any]:
    """Run ``phase`` in a fresh interpreter; its JSON report plus the child's wall time with imports."""
    started = time.perf_counter()
    command = [sys.executable, __file__, "--phase", phase, "--work", str(work), "--users", str(args.users)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"phase {phase} failed:\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_wall_s"] = round(time.perf_counter() - started, 2)
    print(f"{phase}: {json.dumps(report)}", file=sys.stderr, flush=True)
    return report


def markdown(results: dict[str, Any], args) -> str:
    """The report of the phases that ran (``--phases``)."""
    naive, ours, full, cached = (results.get(k) for k in ("naive", "ours", "full", "cached"))
    rows = ["| measure | value |", "|---|---|"]
    if naive:
        rows.append(
            f"| naive loop, {naive['texts']} user prompts (wall / CPU s) | {naive['wall_s']} / {naive['cpu_s']} |"
        )
    if ours:
        rows.append(f"| our cache, same prompts, empty store (wall / CPU s) | {ours['wall_s']} / {ours['cpu_s']} |")
    if naive and ours:
        rows += [
            f"| speed-up, wall (CPU) | {naive['wall_s'] / ours['wall_s']:.2f}x "
            f"({naive['cpu_s'] / ours['cpu_s']:.2f}x) |",
            f"| max abs difference of the states, ours vs naive | {ours['max_abs_diff_vs_naive']:.2e} |",
        ]
    if full:
        rows += [
            f"| full ML-100K cache: {full['user']['count']} users + {full['scenario']['count']} scenarios + "
            f"{full['item']['count']} items (wall / CPU s) | {full['total']['wall_s']} / {full['total']['cpu_s']} |",
            f"| per stage, wall s: user / scenario / item | {full['user']['wall_s']} / {full['scenario']['wall_s']} / "
            f"{full['item']['wall_s']} |",
            f"| mean / max tokens of a user prompt | {full['user']['tokens_mean']} / {full['user']['tokens_max']} |",
        ]
    if cached:
        rows.append(
            f"| fully cached re-run of the three stages (in-process s / with interpreter start s) | "
            f"{cached['total']['wall_s']} / {cached['process_wall_s']} |"
        )
    ran = [k for k in ("naive", "ours", "full", "cached") if results.get(k)]
    rows.append(
        "| peak RSS MB: " + " / ".join(ran) + " | " + " / ".join(str(results[k]["peak_rss_mb"]) for k in ran) + " |"
    )
    loads = [
        (
            k,
            results[k].get("load_start", results[k].get("total", {}).get("load_start")),
            results[k].get("load_end", results[k].get("total", {}).get("load_end")),
        )
        for k in ran
    ]
    rows.append(
        "| load average (1 min) at start-end: "
        + " / ".join(k for k, _, _ in loads)
        + " | "
        + " / ".join(f"{a}-{b}" for _, a, b in loads)
        + " |"
    )
    batch = f"; batch size {ours['batch_size']}" if ours else ""
    return (
        f"Command: `python bench/bench_hidden_states.py --users {args.users} --phases {' '.join(args.phases)}`  \n"
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {os.cpu_count()} CPU cores, torch threads "
        f"{results['threads']}{batch}.\n\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    apply_defaults()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500, help="user prompts in the naive-vs-ours comparison")
    parser.add_argument("--work", type=Path, default=Path("/tmp/llm4ctr-bench-hs"), help="scratch folder")
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "docs" / "RESULTS_HIDDEN_STATES.md",
        help="markdown file whose `bench_hidden_states` block is replaced",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=ORDER,
        default=list(ORDER),
        help="phases to run (default: all); the report covers the phases run",
    )
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        report = PHASES[args.phase](args.work, args)
        print(json.dumps({**report, "peak_rss_mb": peak_rss_mb()}))
        return
    if not (ROOT / "artifacts" / "split" / DATASET / "train.parquet").is_file():
        sys.exit(f"artifacts/split/{DATASET} is missing: run `llm4ctr stage ingest` and `llm4ctr stage split` first")
    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"threads": torch.get_num_threads()}
    for phase in ORDER:
        if phase in args.phases or phase == "prompts":
            results[phase] = child(phase, args.work, args)
    text = markdown(results, args)
    replace_block(args.results, "bench_hidden_states", text)
    write_text(ROOT / "bench" / "results" / "hidden_states.json", json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
