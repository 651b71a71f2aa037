"""Fixed-count batches vs padded-token budgets for the hidden-state pass, side by side in one run.

    python bench/bench_token_batches.py [--users 300] [--items 600] [--repeats 2]

Needs artifacts/prompts/ml-100k/ (`llm4ctr stage prompts`). The model, pooling and length limit are
params.yaml's (``hidden_states.user`` / ``item``: SmolLM2-135M-Instruct by default). Each setting
computes the same prompts into an empty store; settings alternate within each repeat, so a busy
machine slows them alike. Reported: texts/s and real tokens/s (the median over repeats), batches, the
share of padding in the padded tokens, and the largest difference from the fixed batches' states.
Results go to docs/RESULTS_HIDDEN_STATES.md (block "token batches") and bench/results/token_batches.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm4ctr.atomic import replace_block, write_text  # noqa: E402
from llm4ctr.env import apply_defaults  # noqa: E402
from llm4ctr.params import load_params  # noqa: E402

DOC = ROOT / "docs" / "RESULTS_HIDDEN_STATES.md"
RECORD = ROOT / "bench" / "results" / "token_batches.json"
# (name, texts per batch at most, padded tokens per batch at most; 0 = no token cap)
SETTINGS = (("fixed 16 texts", 16, 0), ("2,048 tokens", 256, 2048), ("4,096 tokens", 256, 4096))


def measure(encoder, texts: list[str], batch_size: int, batch_tokens: int) -> tuple[dict, torch.Tensor]:
    from models import hidden_states as hs

    with tempfile.TemporaryDirectory() as store:
        run = hs.cache_states(encoder, texts, "bench", Path(store), batch_size=batch_size, shard_size=4096,
                              batch_tokens=batch_tokens, progress=False)  # fmt: skip
        states = hs.read_states(run)
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(encoder.model)
    ids, _ = hs.tokenize(tokenizer, texts, encoder)
    batches = hs.batches(ids, list(map(str, range(len(ids)))), batch_size, batch_tokens)
    padded = sum(len(b) * max(len(ids[i]) for i in b) for b in batches)
    figures = {
        "texts_per_s": run.computed_here / run.compute_seconds,
        "tokens_per_s": run.tokens_here / run.compute_seconds,
        "batches": len(batches),
        "padding_share": 1 - run.tokens_here / padded,
    }
    return figures, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300, help="user prompts (the longest kind)")
    parser.add_argument("--items", type=int, default=600, help="item prompts (short)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    apply_defaults()
    import pandas as pd

    from assets.hidden_states import encoder_for

    params = load_params(ROOT / "params.yaml", {"hidden_states.device": "cpu"})
    folder = ROOT / "artifacts" / "prompts" / "ml-100k"
    kinds = {"user": args.users, "item": args.items}
    rows, load = [], os.getloadavg()[0]
    for kind, n in kinds.items():
        texts = pd.read_parquet(folder / f"{kind}.parquet")["text"].tolist()[:n]
        encoder = encoder_for(params, kind)
        runs: dict[str, list[dict]] = {name: [] for name, *_ in SETTINGS}
        base = None
        for repeat in range(args.repeats):
            for name, batch_size, batch_tokens in SETTINGS if repeat % 2 == 0 else SETTINGS[::-1]:
                figures, states = measure(encoder, texts, batch_size, batch_tokens)
                if name == SETTINGS[0][0]:
                    base = states if base is None else base
                figures["max_abs_diff"] = None if base is None else float((states - base).abs().max())
                runs[name].append(figures)
                print(kind, name, json.dumps(figures), flush=True)
        for name, batch_size, batch_tokens in SETTINGS:
            done = runs[name]
            rows.append({
                "kind": kind, "texts": len(texts), "setting": name, "batch_size": batch_size,
                "batch_tokens": batch_tokens,
                "texts_per_s": round(statistics.median(r["texts_per_s"] for r in done), 2),
                "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in done), 1),
                "batches": done[0]["batches"], "padding_share": round(done[0]["padding_share"], 4),
                "max_abs_diff": max((r["max_abs_diff"] or 0.0) for r in done),
            })  # fmt: skip
    record = {"model": params.get_path("llm.name"), "threads": torch.get_num_threads(), "load_before": load,
              "load_after": os.getloadavg()[0], "repeats": args.repeats, "rows": rows}  # fmt: skip
    write_text(RECORD, json.dumps(record, indent=1) + "\n")
    lines = [
        f"`python bench/bench_token_batches.py --users {args.users} --items {args.items} --repeats {args.repeats}`: "
        f"{record['model']} on the CPU, {record['threads']} threads, 1-minute load {load:.1f} before, "
        f"{record['load_after']:.1f} after; medians over the repeats.",
        "",
        "| prompts | batches of | batches | padding share | texts/s | tokens/s | vs fixed | max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fixed = next(r for r in rows if r["kind"] == row["kind"] and r["batch_tokens"] == 0)
        lines.append(
            f"| {row['kind']} ({row['texts']}) | {row['setting']} | {row['batches']} | {row['padding_share']:.1%} | "
            f"{row['texts_per_s']} | {row['tokens_per_s']} | {row['texts_per_s'] / fixed['texts_per_s']:.2f}x | "
            f"{row['max_abs_diff']:.1e} |"
        )
    replace_block(DOC, "token batches", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
