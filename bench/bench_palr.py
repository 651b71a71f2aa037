"""PALR and the LLM as the recommender on ML-100K (GitHub issue 19): does a 135M LLM rank or predict
clicks better than popularity and DCNv2 on the very same lists and rows, zero-shot or finetuned?

    python bench/bench_palr.py run [--cells random cold_item] [--update]   # resumable, hours on 2 cores
    python bench/bench_palr.py rescore [--cells ...]                        # score again, this evaluate
    python bench/bench_palr.py report                                       # tables -> docs/RESULTS_PALR.md

Each cell is a real pipeline run in its own clone (bench/cells.py) under artifacts/.work/bench-palr/<cell>/,
recorded in bench/results/palr/<cell>.json; the hidden-state store is shared with the project's default one.

Cells (LLM: SmolLM2-135M-Instruct, the default; 3 seeds for every finetuned variant and for DCNv2):
- ``random``: 50 evaluation users; listwise (LLMRank and LlamaRec lists, two candidate orders) zero-shot
  and LoRA on 64 users, popularity / the ID two-tower retriever / DCNv2 ranking the same lists; pointwise
  zero-shot and LoRA on 16 / 64 / 256 training rows, scored on the 50 users' test rows next to DCNv2;
- ``cold_item``: the pointwise rows on the cold-item split (test items unseen in training), zero-shot and
  256 shots, next to DCNv2 on the same rows (seed 2024);
- ``random_loraall``: the pointwise LoRA on all the training rows this budget fits (``palr.finetune.all_rows``,
  512 steps), next to DCNv2 on the same rows (seed 2024: an hour and more per seed on 2 cores);
- ``random_epochs8`` / ``random_listwise_epochs8``: the random cell's 256-shot pointwise LoRA / 64-user
  listwise LoRA trained 8 epochs instead of 2 (seed 2024): does more training on the same examples lift them?
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cells import Cell, main, merged, read_records  # noqa: E402
from llm4ctr.params import format_override, read_profile  # noqa: E402

WORK = ROOT / "artifacts" / ".work" / "bench-palr"
RECORDS = ROOT / "bench" / "results" / "palr"
DOC = ROOT / "docs" / "RESULTS_PALR.md"
BUDGET = ("palr.users=50", "palr.finetune.pool=64", "palr.finetune.lora.min_steps=24")
LISTWISE = ("popularity", "retriever", "dcnv2", "listwise_zeroshot", "listwise_lora64")
POINTWISE = ("pointwise_zeroshot", "pointwise_lora256", "pointwise_lora16", "pointwise_lora64")
COST_CELLS = ("random", "cold_item")  # the other cells retrain one variant of the random cell
TALLREC = {16: 0.6724, 64: 0.6748, 256: 0.7198}  # LLaMA-7B + LoRA on ML-100K (docs/METHODS.md)


def cells() -> dict[str, Cell]:
    store = format_override("hidden_states.store", str(ROOT / "artifacts" / ".work" / "hidden_states"))
    protocol = {name: tuple(format_override(k, v) for k, v in read_profile(ROOT / "profiles", p).items())
                for name, p in (("random", "seeds3"), ("cold_item", "cold_item"))}  # fmt: skip
    random_variants = (*LISTWISE[:4], *POINTWISE, LISTWISE[4])  # cheapest first; the listwise LoRA last
    cold_variants = POINTWISE[:2]
    return {
        "random": Cell(
            "random",
            merged(*protocol["random"], store, *BUDGET, format_override("palr.variants", list(random_variants))),
            ("train@dcnv2", *(f"palr@{v}" for v in random_variants)),
        ),
        "cold_item": Cell(
            "cold_item",
            merged(
                *protocol["cold_item"],
                "train.seeds=[2024]",  # one seed (DCNv2 and the LLM alike): the session's CPU budget
                store,
                *BUDGET,
                "palr.finetune.pool=0",
                "palr.retriever=popularity",
                "palr.num_threads=1",  # runs beside the random cell: a core each
                "learn.towers=[id]",  # the popularity retriever needs no tower; palr_candidates reads their folder
                format_override("palr.variants", list(cold_variants)),
            ),
            ("train@dcnv2", *(f"palr@{v}" for v in cold_variants)),
        ),
        "random_loraall": Cell(
            "random_loraall",
            merged(
                *protocol["random"],
                "train.seeds=[2024]",
                store,
                *BUDGET,
                "palr.finetune.pool=0",
                "palr.num_threads=1",  # runs beside the random cell: a core each
                "learn.towers=[id]",
                format_override("palr.variants", ["pointwise_loraall"]),
            ),
            ("train@dcnv2", "palr@pointwise_loraall"),
        ),
        "random_epochs8": Cell(
            "random_epochs8",
            merged(
                *protocol["random"],
                "train.seeds=[2024]",
                store,
                *BUDGET,
                "palr.finetune.pool=0",
                "palr.finetune.lora.epochs=8",  # 256 rows x 8 epochs = 256 steps: is 2 epochs too few?
                "palr.num_threads=1",  # runs beside the random cell: a core each
                "learn.towers=[id]",
                format_override("palr.variants", ["pointwise_lora256"]),
            ),
            ("train@dcnv2", "palr@pointwise_lora256"),
        ),
        "random_listwise_epochs8": Cell(
            "random_listwise_epochs8",
            merged(
                *protocol["random"],
                "train.seeds=[2024]",
                store,
                *BUDGET,
                "palr.finetune.lora.epochs=8",  # 64 lists x 8 epochs = 64 steps instead of 24
                "palr.num_threads=1",
                "learn.towers=[id]",
                format_override("palr.variants", ["listwise_lora64"]),
            ),
            ("train@dcnv2", "palr@listwise_lora64"),
        ),
    }


def reuse_profiles(cell: Cell):
    """A cell on the random split starts with the random cell's profile cache (content-keyed: only the
    profiles its own prompts and settings match are reused, the others are written)."""
    source = WORK / "random" / "artifacts" / ".work" / "palr_profiles" / "profiles.jsonl"
    if cell.name == "random" or not cell.name.startswith("random") or not source.is_file():
        return None

    def copy(clone: Path) -> None:
        target = clone / "artifacts" / ".work" / "palr_profiles" / "profiles.jsonl"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    return copy


def pointwise_table(record: dict) -> str:
    """P(Yes) as a click probability on the evaluation users' test rows, next to DCNv2 on the same rows."""
    sampled = record["results"].get("sampled", {})
    variants = record["results"].get("palr", {}).get("variants", {})
    lines = [
        "| model | shots | test rows (users) | AUC ± std (seeds) | LogLoss | DCNv2 AUC, same rows | RelaImpr vs DCNv2 "
        "| TALLRec (LLaMA-7B) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(sampled, key=lambda n: _shots(variants.get(n, {}))):
        r = sampled[name]
        shots = _shots(variants.get(name, {}))
        spread = f" ± {r['auc_std']:.4f}" if r["seeds"] > 1 else ""
        lines.append(
            f"| {name} | {shots} | {r['rows']} ({r['users']}) | {r['auc']:.4f}{spread} ({r['seeds']}) | "
            f"{r['logloss']:.4f} | {r['base_auc']:.4f} | {r['relaimpr'] * 100:+.2f}% | {TALLREC.get(shots, '-')} |"
        )
    return "\n".join(lines) + "\n"


def _shots(summary: dict) -> int:
    """A variant's training examples: its shot count, or for ``..._loraall`` the rows it was given."""
    shots = summary.get("shots") or 0
    if shots == "all":
        return max((fit["examples"] for fit in summary.get("finetune", {}).values()), default=0)
    return shots


def finetune_table(records: dict[str, dict]) -> str:
    """Per finetuned variant and seed: examples, steps, the loss at the start and the end, seconds."""
    lines = ["| cell | variant | seed | examples | steps | loss first 5 -> last 5 steps | seconds |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for cell, record in records.items():
        for name, summary in sorted(record["results"].get("palr", {}).get("variants", {}).items()):
            for seed, fit in summary.get("finetune", {}).items():
                lines.append(
                    f"| {cell} | {name} | {seed} | {fit['examples']} | {fit['steps']} | "
                    f"{fit['loss_first']:.3f} -> {fit['loss_last']:.3f} | {fit['seconds']:.0f} |"
                )
    return "\n".join(lines) + "\n"


def report() -> None:
    from assets.palr_tables import cost_markdown, listwise_markdown
    from llm4ctr.atomic import replace_block

    records = read_records(RECORDS)
    for cell, record in records.items():
        palr = record["results"].get("palr", {})
        lists = palr.get("candidates", {})
        listwise = listwise_markdown(palr.get("variants", {}), lists.get("candidates"), lists.get("retriever_hit_rate"))
        if listwise:
            replace_block(DOC, f"palr {cell} listwise", listwise)
        if record["results"].get("sampled"):
            replace_block(DOC, f"palr {cell} pointwise", pointwise_table(record))
        if cell in COST_CELLS:
            replace_block(DOC, f"palr {cell} cost", cost_markdown(palr.get("variants", {})))
    replace_block(DOC, "palr finetune", finetune_table(records))
    print(DOC.read_text())


if __name__ == "__main__":
    main(__doc__, cells(), WORK, RECORDS, report, prepare=reuse_profiles)
