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
  CTR-only paths, 1 for the with-PLM path, seeds3's epoch and row budgets.
- ``<split>@<source>``: the knowledge-source sweep, LEARN (item embeddings from ``source``) and its
  DCNv2 base, seed 2024, on ``random`` and ``cold_item``.
- ``cold_item+min_count2``: DCNv2 and LEARN on the cold-item protocol with ``features.min_count`` 2, so
  the OOV row that held-out items map to is trained (on the items seen once), 3 seeds.
- ``cold_item+tower_epochs40``: the same with LEARN's towers given the full profile's 40 epochs.
- ``cold_item+no_title``: LEARN with an item text of genres and year only (no title): the control that
  separates the LLM's knowledge of a movie from a re-encoding of the CTR features.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cells import Cell, auc_cell, main, read_records, versus  # noqa: E402
from llm4ctr.atomic import write_text  # noqa: E402
from llm4ctr.params import format_override, read_profile  # noqa: E402

WORK = ROOT / "artifacts" / ".work" / "bench-cold-start"
RECORDS = ROOT / "bench" / "results" / "cold_start"
DATASET = "ml-100k"
PROTOCOLS = {"random": "seeds3", "cold_item": "cold_item", "cold_user": "cold_user"}  # column -> profile
SOURCES = ("SmolLM2-135M-Instruct", "gemma-3-270m", "all-mpnet-base-v2", "all-MiniLM-L6-v2")
SWEEP_SPLITS = ("random", "cold_item")
NO_TITLE_CONFIG = "configs/prompts.bench-no-title.yaml"  # written into a cell's clone, never committed


def cells() -> dict[str, Cell]:
    """Every cell, protocols first (the sweep's default-source cells reuse nothing: same seed, fewer stages)."""
    shared = format_override("hidden_states.store", str(WORK / "hidden_states"))
    found = {
        name: Cell(name, (*(format_override(*kv) for kv in read_profile(ROOT / "profiles", profile).items()), shared))
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
    # the zoo's cold-item fallback with a trained OOV row: IDs seen once in training map to it as well
    cold = found["cold_item"].overrides
    found["cold_item+min_count2"] = Cell(
        "cold_item+min_count2", (*cold, "features.min_count=2"), ("train@dcnv2", "learn@dcnv2_learn")
    )
    # LEARN's towers with the full profile's epoch budget (seeds3 stops at 10, still improving)
    found["cold_item+tower_epochs40"] = Cell(
        "cold_item+tower_epochs40",
        (*cold, 'learn.towers=["learn"]', "learn.tower_train.max_epochs=40"),
        ("train@dcnv2", "learn@dcnv2_learn"),
    )
    # the knowledge control: LEARN's item text without the title (genres and year only: what the CTR
    # features already say), so whatever LEARN adds here is not the LLM's knowledge of the movie
    found["cold_item+no_title"] = Cell(
        "cold_item+no_title",
        (*cold, 'learn.towers=["learn"]', f"prompts.config={NO_TITLE_CONFIG}"),
        ("train@dcnv2", "learn@dcnv2_learn"),
        item_fields=("genres", "year"),
    )
    return found


def _prepare(cell: Cell):
    """The clone edit a cell needs before its run (the no-title item text), or None."""
    return (lambda folder: _item_text_config(folder, cell.item_fields)) if cell.item_fields else None


def _item_text_config(folder: Path, fields: tuple[str, ...]) -> None:
    """Write the clone's prompts config with the ML-100K item text cut to ``fields`` (in NO_TITLE_CONFIG)."""
    import yaml

    config = yaml.safe_load((folder / "configs" / "prompts.yaml").read_text())
    item = config[DATASET]["item"]
    item["fields"] = {field: name for field, name in item["fields"].items() if field in fields}
    write_text(folder / NO_TITLE_CONFIG, yaml.safe_dump(config, sort_keys=False))


# ---------------------------------------------------------------------- report
def protocol_table(records: dict[str, dict]) -> str:
    """Rows = methods, columns = protocols: AUC ± std (seeds) and AUC points / RelaImpr over DCNv2."""
    from assets.registry import SCORED

    present = {p: records[p]["results"] for p in PROTOCOLS if p in records}
    stage_of = {m: e["stage"] for r in present.values() for m, e in r["models"].items()}
    order = sorted(stage_of, key=lambda m: (SCORED.index(stage_of[m]) if stage_of[m] in SCORED else 99, m))
    head = "| method | stage | " + " | ".join(f"{p} AUC | {p} vs DCNv2" for p in present) + " |"
    lines = [head, "|---|---|" + "---|---|" * len(present)]
    for method in order:
        stage = stage_of[method]
        cells = []
        for results in present.values():
            entry, base = results["models"].get(method), results["models"].get(results["base_model"])
            cells += [auc_cell(entry), versus(entry, base)]
        lines.append(f"| {method} | {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def variant_table(records: dict[str, dict]) -> str:
    """Cells ``<protocol>+<change>``: the protocol with one setting changed, against its DCNv2."""
    lines = ["| cell | change | method | AUC | vs DCNv2 |", "|---|---|---|---|---|"]
    for name, record in records.items():
        protocol, _, change = name.partition("+")
        if not change or protocol not in PROTOCOLS:
            continue
        models = record["results"]["models"]
        for method, entry in models.items():
            lines.append(
                f"| {protocol} | {change} | {method} | {auc_cell(entry)} | "
                f"{versus(entry, models.get(record['results']['base_model']))} |"
            )
    return "\n".join(lines) + "\n"


def sweep_table(records: dict[str, dict]) -> str:
    """Knowledge source x split: DCNv2 and DCNv2 + LEARN features (seed 2024) and the item-state cost."""
    lines = [
        "| knowledge source | split | DCNv2 AUC | DCNv2+LEARN AUC | AUC points | RelaImpr | item states (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for source in SOURCES:
        for split in SWEEP_SPLITS:
            record = records.get(f"{split}@{source}")
            if not record:
                continue
            models = record["results"]["models"]
            base, learn = models.get("dcnv2"), models.get("dcnv2_learn")
            if not base or not learn:
                continue
            points = (learn["auc"] - base["auc"]) * 100
            seconds = record["stage_seconds"].get("hidden_states_item", "-")
            lines.append(
                f"| {source} | {split} | {base['auc']:.4f} | {learn['auc']:.4f} | {points:+.2f} | "
                f"{points / base['auc']:+.2f}% | {seconds} |"
            )
    return "\n".join(lines) + "\n"


def probe_table() -> str:
    path = RECORDS / "probe.json"
    if not path.is_file():
        return "(run `python bench/knowledge_probe.py`)\n"
    probe = json.loads(path.read_text())
    lines = [
        f"{probe['items']} items, {probe['folds']}-fold over items; liked share: items with >= 10 ratings.",
        "",
        "| source | params (M) | disk (MB) | dim | catalogue embed (s) | genre macro AUC | decade macro AUC "
        "| liked-share R² features | + title vector |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for source, f in probe["sources"].items():
        lines.append(
            f"| {source} | {f.get('params_m', '-')} | {f.get('disk_mb', '-')} | {f['dim']} | "
            f"{f.get('catalogue_seconds', '-')} | {f['genre_macro_auc']:.4f} | {f['decade_macro_auc']:.4f} | "
            f"{f['liked_r2_features']:.4f} | {f['liked_r2_features_title']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def reception_ceiling(cell: str = "cold_item", model: str = "dcnv2", smoothing: float = 5.0) -> str:
    """What knowing each new item's reception would be worth: ``model``'s test AUC on the cold-item cell,
    then the same logit combined with the item's leave-one-out liked share among the *other* held-out
    rows of that item (a perfect-knowledge oracle no real source has; each row's own label is left out),
    the combination fitted on validation and applied to test, per seed."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from assets.runs import PREDICTIONS
    from models.metrics import auc

    folder = WORK / cell / "artifacts"
    preds = folder / "train" / DATASET / model / PREDICTIONS
    if not preds.is_file():
        return f"(no {preds})\n"
    frames = {s: pd.read_parquet(folder / "split" / DATASET / f"{s}.parquet") for s in ("train", "valid", "test")}
    prior = float(frames["train"]["label"].mean())

    def share(frame: pd.DataFrame) -> np.ndarray:
        item = frame.groupby("item_id", observed=True)["label"].transform
        total, count = item("sum").to_numpy(float), item("size").to_numpy(float)
        liked = (total - frame["label"].to_numpy(float) + prior * smoothing) / (count - 1 + smoothing)
        return np.log(liked / (1 - liked))

    table = pd.read_parquet(preds)
    base, combined = [], []
    for _seed, group in table.groupby("seed"):
        x = {}
        for s in ("valid", "test"):
            p = group[group["split"] == s].sort_values("row")["prob"].to_numpy().clip(1e-6, 1 - 1e-6)
            x[s] = np.column_stack([np.log(p / (1 - p)), share(frames[s])])
        fit = LogisticRegression().fit(x["valid"], frames["valid"]["label"])
        y = frames["test"]["label"].to_numpy()
        base.append(auc(y, x["test"][:, 0]))
        combined.append(auc(y, fit.decision_function(x["test"])))
    return (
        "| model | test AUC | + the item's reception (oracle) | AUC points |\n|---|---|---|---|\n"
        f"| {model} ({len(base)} seeds) | {np.mean(base):.4f} | {np.mean(combined):.4f} | "
        f"{(np.mean(combined) - np.mean(base)) * 100:+.2f} |\n"
    )


def cost_table(records: dict[str, dict]) -> str:
    """Each protocol cell's summed stage seconds (a resumed run counts each stage once)."""
    lines = ["| protocol | stages | seconds |", "|---|---|---|"]
    for protocol in PROTOCOLS:
        if protocol in records:
            seconds = records[protocol]["stage_seconds"]
            lines.append(f"| {protocol} | {len(seconds)} | {sum(seconds.values()):.0f} |")
    return "\n".join(lines) + "\n"


def item_count_plot(records: dict[str, dict], path: Path) -> None:
    """AUC by the item's training interactions: the cold point from the cold-item protocol, the rest from
    the random split (its handful of cold rows is too few to score), one line per method in both."""
    from assets.evaluate import ITEM_COUNT_BUCKETS
    from assets.plots import plot_by_bucket

    if "random" not in records or "cold_item" not in records:
        return
    random, cold = records["random"]["results"], records["cold_item"]["results"]
    rows = {"cold (0), cold_item split": cold["segments"]["item_count_rows"]["cold (0)"]}
    counts = random["segments"]["item_count_rows"]  # in bucket order (results.json sorts its keys)
    rows.update({label: counts[label] for _, _, label in ITEM_COUNT_BUCKETS if label != "cold (0)"})
    merged = {}
    for method, entry in random["models"].items():
        if method in cold["models"]:
            per = {"cold (0), cold_item split": cold["models"][method]["auc"]}
            per.update({k: v for k, v in entry["per_item_count"].items() if k != "cold (0)"})
            merged[method] = {"auc": entry["auc"], "per_item_count": per}
    plot_by_bucket(
        merged, "per_item_count", rows, path, "AUC by item training count: ML-100K, random split (cold point: "
        "cold-item split)", "item's interactions in the training split (test rows per bucket)",
    )  # fmt: skip


def report() -> None:
    from llm4ctr.atomic import replace_block

    records = read_records(RECORDS, skip=("probe",))
    doc = ROOT / "docs" / "RESULTS_COLD_START.md"
    replace_block(doc, "cold-start protocols", protocol_table(records))
    replace_block(doc, "cold-start variants", variant_table(records))
    replace_block(doc, "cold-start sweep", sweep_table(records))
    replace_block(doc, "cold-start probe", probe_table())
    replace_block(doc, "cold-start cost", cost_table(records))
    replace_block(doc, "cold-start ceiling", reception_ceiling())
    item_count_plot(records, ROOT / "docs" / "cold_start_auc_by_item_count.png")
    print(doc.read_text())


if __name__ == "__main__":
    main(__doc__, cells(), WORK, RECORDS, report, prepare=_prepare)
