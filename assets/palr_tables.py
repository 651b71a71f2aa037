"""The `palr` variants' listwise and cost tables, written by the evaluate stage into results.md.

Each cell of the listwise table shows one figure under every shuffle seed of the candidate order
(``palr.shuffles``, "a / b"): a gap between them is position bias. The row "random order" is the
expectation of a ranker that ignores the candidates, computed, not sampled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from llm4ctr.paths import artifact_dir

STAGE = "palr"
COLUMNS = (  # (protocol, metric, header)
    ("llmrank", "ndcg@10", "LLMRank NDCG@10"),
    ("llmrank", "hr@1", "LLMRank HR@1"),
    ("llmrank", "mrr", "LLMRank MRR"),
    ("llamarec", "ndcg@10", "LlamaRec NDCG@10 (all users)"),
    ("llamarec_found", "ndcg@10", "LlamaRec NDCG@10 (target retrieved)"),
    ("llamarec_found", "mrr", "LlamaRec MRR (target retrieved)"),
)


def read_summaries(root: Path, dataset: str) -> dict[str, dict[str, Any]]:
    """variant -> summary.json of every finished `palr` instance (in name order)."""
    folder = artifact_dir(root, STAGE, dataset)
    paths = sorted(folder.glob("*/summary.json")) if folder.is_dir() else []
    return {
        p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in paths if not p.parent.name.startswith(".")
    }


def random_order(candidates: int, found: float) -> dict[str, dict[str, float]]:
    """Expected figures of a random order of ``candidates`` items, the target in the list with probability ``found``."""
    gains = 1.0 / np.log2(np.arange(candidates) + 2.0)
    whole = {"ndcg@10": gains[:10].sum() / candidates, "hr@1": 1.0 / candidates,
             "mrr": float(np.sum(1.0 / np.arange(1, candidates + 1)) / candidates)}  # fmt: skip
    return {"llmrank": whole, "llamarec": {k: v * found for k, v in whole.items()}, "llamarec_found": whole}


def _cell(by_shuffle: dict[str, dict[str, float]] | None, metric: str) -> str:
    if not by_shuffle:
        return "-"
    return " / ".join(f"{figures[metric]:.4f}" for _, figures in sorted(by_shuffle.items()))


def listwise_markdown(
    summaries: dict[str, dict[str, Any]], candidates: int | None = None, found: float | None = None
) -> str:
    """The listwise table: every variant with listwise figures, plus the random-order expectation
    when ``candidates`` (K) and ``found`` (the retriever's hit rate) are given."""
    ranked = {name: s for name, s in summaries.items() if "listwise" in s}
    if not ranked:
        return ""
    first = next(iter(ranked.values()))
    lists = int(first["listwise"]["llmrank"][next(iter(first["listwise"]["llmrank"]))]["lists"])
    shuffles = " / ".join(sorted(first["listwise"]["llmrank"]))
    lines = [
        f"PALR listwise ranking: {lists} users, one list per protocol each; every cell under the candidate-order "
        f"seeds {shuffles}:",
        "",
        "| model | " + " | ".join(h for _, _, h in COLUMNS) + " | seeds |",
        "|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    if candidates and found is not None:
        expected = random_order(candidates, found)
        lines.append(
            "| random order (expected) | " + " | ".join(f"{expected[p][m]:.4f}" for p, m, _ in COLUMNS) + " | - |"
        )
    for name, s in ranked.items():
        cells = " | ".join(_cell(s["listwise"].get(p), m) for p, m, _ in COLUMNS)
        lines.append(f"| {name} | {cells} | {len(s['seeds'])} |")
    return "\n".join(lines) + "\n"


def cost_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """The cost table of the LLM variants: tokens and milliseconds per list / record, the prefix-sharing
    speed-up and the base CTR model's milliseconds per record on the same rows, same machine and run."""
    rows = []
    for name, s in summaries.items():
        cost = s.get("cost")
        if not cost:
            continue
        sharing = cost.get("sharing") or {}
        base = next((k for k in sharing if k.endswith("_ms_per_record") and not k.startswith("ms_")), None)
        cells = [
            cost.get("listwise_tokens_per_list"), cost.get("listwise_ms_per_list"),
            cost.get("pointwise_tokens_per_record"), cost.get("pointwise_ms_per_record"),
            sharing.get("ms_per_record_unshared"), sharing.get("ms_per_record_shared"), sharing.get("speedup"),
            f"{sharing[base]} ({base.removesuffix('_ms_per_record')})" if sharing.get(base) is not None else None,
            f"{s.get('truncated_prompts', 0)} of {s.get('prompts', 0)}",
        ]  # fmt: skip
        rows.append(f"| {name} | " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    if not rows:
        return ""
    return (
        "\n".join(
            [
                "PALR cost (this machine, one run): tokens and ms per listwise list / pointwise record; pointwise "
                "with and without the user's prefix shared, on the cost users' test rows:",
                "",
                "| model | tokens / list | ms / list | tokens / record | ms / record | ms / record unshared | "
                "ms / record shared | speed-up | CTR model ms / record | truncated prompts |",
                "|---|---|---|---|---|---|---|---|---|---|",
                *rows,
            ]
        )
        + "\n"
    )


def collect(root: Path, dataset: str) -> dict[str, Any]:
    """What the tables read: {"candidates": the palr_candidates summary, "variants": :func:`read_summaries`}
    (empty when no `palr` instance ran); the evaluate stage keeps it in results.json."""
    summaries = read_summaries(root, dataset)
    if not summaries:
        return {}
    path = artifact_dir(root, "palr_candidates", dataset) / "summary.json"
    lists = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {"candidates": lists, "variants": summaries}


def markdown(collected: dict[str, Any]) -> str:
    """Both tables from :func:`collect`'s output (the random-order row from the candidate lists), or nothing."""
    if not collected:
        return ""
    lists, summaries = collected["candidates"], collected["variants"]
    table = listwise_markdown(summaries, lists.get("candidates"), lists.get("retriever_hit_rate"))
    return "\n" + table + "\n" + cost_markdown(summaries)
