"""GPT4SM on ML-100K (GitHub issue 18): does a teacher's embedding help a small student, and where?

    python bench/bench_gpt4sm.py run [--cells random cold_item ...] [--update]   # resumable, hours
    python bench/bench_gpt4sm.py rescore [--cells ...]                          # score again, this evaluate
    python bench/bench_gpt4sm.py latency [--cell random]                        # serving cost per variant
    python bench/bench_gpt4sm.py distance                                       # where c ends up: |c - u|^2
    python bench/bench_gpt4sm.py taste                                          # taste in each text space
    python bench/bench_gpt4sm.py report                                         # tables -> docs

Each cell is a real pipeline run in its own clone (bench/cells.py) under
artifacts/.work/bench-gpt4sm/<cell>/, recorded in bench/results/gpt4sm/<cell>.json. The hidden-state
store is shared with the project's default one, so the teacher's vectors are computed once.

Cells (every student variant and DCNv2 + teacher on the same test rows as DCNv2, 3 seeds):
- ``random``, ``cold_item``: the two split protocols, teacher all-mpnet-base-v2, its raw vectors (the
  paper's use; the pipeline's default centres them, see the ``+center_teacher`` cells);
- ``random@SmolLM2-135M-Instruct``: the teacher swap, mean-pooled decoder states (centred); the
  teacher-free rows (DCNv2, vanilla) are the ``random`` cell's, which the same seeds reproduce;
- ``random+<change>``: the search for why (seed 2024): EaaR's w_r grid, EaaP's N_ep, one trainable
  student layer (on 20,000 rows: vanilla and EaaR), three times the epochs (vanilla, EaaF, EaaR);
- ``random+center_teacher``, ``cold_item+center_teacher``: all-mpnet-base-v2 centred like the swap's
  teacher (3 seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cells import DATASET, Cell, auc_cell, merged, read_records, run_cells, versus  # noqa: E402
from llm4ctr.atomic import write_text  # noqa: E402
from llm4ctr.params import format_override, read_profile  # noqa: E402

WORK = ROOT / "artifacts" / ".work" / "bench-gpt4sm"
RECORDS = ROOT / "bench" / "results" / "gpt4sm"
STUDENTS = ("vanilla", "eaaf", "eaar", "eaap", "eaap_copyemb")
ROWS = ("dcnv2", "dcnv2_teacher", *STUDENTS)  # the table's rows, in order
SWAP_TEACHER = "SmolLM2-135M-Instruct"
PROTOCOLS = {"random": "seeds3", "cold_item": "cold_item"}
# every training row; 5 epochs (a step costs ~0.2-0.3 s whatever the batch, see params.yaml), patience 2
RECIPE = ("gpt4sm.rows=null", "gpt4sm.train.max_epochs=5", "gpt4sm.train.patience=2", "gpt4sm.center_teacher=false")


def cells() -> dict[str, Cell]:
    store = format_override("hidden_states.store", str(ROOT / "artifacts" / ".work" / "hidden_states"))
    shared = (*RECIPE, store)
    everything = ("train@dcnv2", *(f"gpt4sm@{v}" for v in ("dcnv2_teacher", *STUDENTS)))
    found = {
        name: Cell(
            name, (*(format_override(k, v) for k, v in read_profile(ROOT / "profiles", p).items()), *shared), everything
        )
        for name, p in PROTOCOLS.items()
    }
    seeds3 = found["random"].overrides
    found[f"random@{SWAP_TEACHER}"] = Cell(
        f"random@{SWAP_TEACHER}",
        merged(*seeds3, f"hidden_states.teacher.model={SWAP_TEACHER}", "gpt4sm.center_teacher=true"),
        tuple(f"gpt4sm@{v}" for v in ("dcnv2_teacher", "eaaf", "eaar", "eaap", "eaap_copyemb")),
    )
    one = (*shared, "train.seeds=[2024]")
    for weight in (0.01, 0.1, 0.5):
        found[f"random+reg{weight}"] = Cell(
            f"random+reg{weight}", (*one, f"gpt4sm.reg_weight={weight}"), ("gpt4sm@eaar",)
        )
    found["random+copy_epochs20"] = Cell(
        "random+copy_epochs20", (*one, "gpt4sm.pretrain.epochs=20"), ("gpt4sm@eaap", "gpt4sm@eaap_copyemb")
    )
    # one trainable student layer: a layer's forward and backward per distinct text per step (~10x a step),
    # so on 20,000 training rows, vanilla against EaaR
    found["random+layers1"] = Cell(
        "random+layers1",
        merged(*one, "gpt4sm.trainable_layers=1", "gpt4sm.rows=20000"),
        ("gpt4sm@vanilla", "gpt4sm@eaar"),
    )
    # the swap teacher's vectors are centred: is it the teacher or the centring? (3 seeds)
    found["random+center_teacher"] = Cell(
        "random+center_teacher",
        merged(*seeds3, "gpt4sm.center_teacher=true"),
        ("gpt4sm@dcnv2_teacher", "gpt4sm@eaaf", "gpt4sm@eaar"),
    )
    found["cold_item+center_teacher"] = Cell(
        "cold_item+center_teacher",
        merged(*found["cold_item"].overrides, "gpt4sm.center_teacher=true"),
        ("gpt4sm@dcnv2_teacher", "gpt4sm@eaaf"),
    )
    # too few steps? every teacher-free and every teacher-using family at three times the epochs
    found["random+epochs15"] = Cell(
        "random+epochs15",
        merged(*one, "gpt4sm.train.max_epochs=15", "gpt4sm.train.patience=3"),
        ("gpt4sm@vanilla", "gpt4sm@eaaf", "gpt4sm@eaar"),
    )
    return found


def cell_records() -> dict[str, dict]:
    """The recorded cells (RECORDS also holds the latency and distance records)."""
    return read_records(RECORDS, skip=("distance", "taste", *(p.stem for p in RECORDS.glob("latency-*.json"))))


# ---------------------------------------------------------------------- serving cost
def latency(cell: str, seed: int = 2024, rows: int = 4096, repeats: int = 3) -> dict:
    """Per-record inference time of every variant of ``cell`` (its checkpoints of ``seed``) on ``rows``
    test rows in one batch, the known catalogue's states in memory; and what a NEW item's text costs
    each variant before it can be scored (a student forward; EaaF also a teacher forward)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from assets.features import load_encoded
    from assets.gpt4sm import Inputs, build_model, teacher_features
    from assets.hidden_states import role_model
    from llm4ctr.params import load_params
    from models.trainer import TrainConfig, Trainer, load_model

    folder = WORK / cell
    artifacts = folder / "artifacts"
    params = load_params(folder / "params.yaml")
    inputs = Inputs(params, folder)
    test = {k: v[:rows] for k, v in inputs.arrays["test"].items() if k != "label"}
    config = TrainConfig(eval_batch_size=rows, progress=False)
    torch.set_num_threads(2)

    def timed(model, arrays) -> float:
        trainer = Trainer(model, config)
        trainer.predict(arrays)  # warm-up
        best = min(_seconds(trainer.predict, arrays) for _ in range(repeats))
        return round(best / len(next(iter(arrays.values()))) * 1e6, 1)

    encoder, encoded = load_encoded(folder, DATASET)
    zoo_test = {k: v[:rows] for k, v in encoded["test"].items() if k != "label"}
    out = {"rows": rows, "variants": {}}
    out["variants"]["dcnv2"] = {
        "us_per_record": timed(
            load_model(folder / "artifacts" / "train" / DATASET / "dcnv2" / f"seed{seed}"), zoo_test
        ),
        "teacher_at_inference": False,
    }
    dense = teacher_features(test, inputs.teacher)
    out["variants"]["dcnv2_teacher"] = {
        "us_per_record": timed(
            load_model(artifacts / "gpt4sm" / DATASET / "dcnv2_teacher" / f"seed{seed}"),
            {**zoo_test, "dense": dense},
        ),
        "teacher_at_inference": True,
    }
    for variant in STUDENTS:
        path = artifacts / "gpt4sm" / DATASET / variant / f"seed{seed}" / "model.safetensors"
        if not path.is_file():
            continue
        model = build_model(params, variant, inputs.student, inputs.teacher, seed)
        model.load_state_dict(load_file(str(path)), strict=False)
        out["variants"][variant] = {"us_per_record": timed(model, test), "teacher_at_inference": variant == "eaaf"}
    text = inputs.texts.texts[1]
    keys = {"student": "gpt4sm.student", "teacher": "hidden_states.teacher.model"}
    for role, key in keys.items():
        path = role_model(params, str(params.get_path(key)))
        tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
        batch = tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            encoder(**batch)
            seconds = min(_seconds(encoder, **batch) for _ in range(repeats))
        out[f"new_text_{role}_ms"] = round(seconds * 1e3, 1)
    out["threads"] = torch.get_num_threads()
    out["measured"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_text(RECORDS / f"latency-{cell}.json", json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


# ---------------------------------------------------------------------- where c ends up
def distance(seed: int = 2024) -> dict:
    """Mean |c - u|^2 over every text (item texts and profiles) of each trained seed-``seed`` student of
    each finished cell whose c lives in the teacher's space (all but EaaF), and of the EaaP copy
    checkpoint: how far training leaves the student's own vector from the teacher (2 = unrelated unit
    vectors, 0 = a copy). Tells whether a strategy actually pulled the student toward the teacher."""
    import torch
    from safetensors.torch import load_file

    from assets.gpt4sm import PRETRAIN_STAGE, Inputs, build_model
    from llm4ctr.params import load_params
    from models.gpt4sm import squared_distance

    out = {}
    for folder in sorted(WORK / name for name in cell_records() if (WORK / name).is_dir()):  # finished cells
        params = load_params(folder / "params.yaml")
        inputs = Inputs(params, folder)
        texts = torch.arange(1, len(inputs.texts.texts))
        teacher = inputs.teacher[texts]
        trained = {  # label -> (strategy, checkpoint)
            variant: (
                variant,
                folder / "artifacts" / "gpt4sm" / DATASET / variant / f"seed{seed}" / "model.safetensors",
            )
            for variant in STUDENTS
            if variant != "eaaf"
        }
        trained["eaap (copy phase only)"] = (
            "eaap",
            folder / "artifacts" / PRETRAIN_STAGE / DATASET / f"seed{seed}" / "copy.safetensors",
        )
        for name, (strategy, path) in trained.items():
            if not path.is_file():
                continue
            model = build_model(params, strategy, inputs.student, inputs.teacher, seed).eval()
            model.load_state_dict(load_file(str(path)), strict=False)
            with torch.no_grad():
                tokens, _ = model.student(texts)
                c = model.tower.copied(tokens)
            out.setdefault(folder.name, {})[name] = round(float(squared_distance(c, teacher).mean()), 4)
    write_text(RECORDS / "distance.json", json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


# ---------------------------------------------------------------------- what the vectors know of taste
def taste(cells_: tuple[str, ...] = ("random", f"random@{SWAP_TEACHER}")) -> dict:
    """No training at all: score each test row by cos(mean vector of the user's liked TRAINING items,
    the candidate's vector) and report global and per-user test AUC, for the teacher of each cell (raw
    and centred) and for the student's own frozen encoder (its mean-pooled token states). How much of
    a user's taste a text space holds by itself, before any strategy uses it."""
    import torch
    import torch.nn.functional as F

    from assets.gpt4sm import Inputs
    from llm4ctr.params import load_params
    from models.metrics import auc, grouped_auc

    def scores(vectors: torch.Tensor, arrays: dict) -> np.ndarray:
        history = torch.as_tensor(arrays["history"])
        taste = F.normalize(vectors[history].sum(dim=1), dim=-1)  # row 0 (padding) is a zero vector
        return (taste * vectors[torch.as_tensor(arrays["item"])]).sum(dim=-1).numpy()

    out = {}
    for cell in cells_:
        folder = WORK / cell
        for center in (False, True):
            params = load_params(folder / "params.yaml", {"gpt4sm.center_teacher": center})
            inputs = Inputs(params, folder)
            test = inputs.arrays["test"]
            user = inputs.splits["test"]["user_id"].astype(str).to_numpy()
            name = f"teacher {params.get_path('hidden_states.teacher.model')}{' centred' if center else ''}"
            spaces = {name: inputs.teacher}
            if cell == cells_[0]:  # the student's own space, centred over the item texts like the teacher's
                states, mask = inputs.student.states, inputs.student.mask.unsqueeze(-1)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
                if center:
                    pooled = pooled - pooled[1 : 1 + len(inputs.texts.item_row)].mean(dim=0)
                pooled = F.normalize(pooled, dim=-1)
                pooled[0] = 0.0  # row 0, the padding of histories, adds nothing (as in the teacher table)
                student = params.get_path("gpt4sm.student")
                student = params.get_path(f"{student}.name") if student in ("plm", "llm") else student
                spaces[f"student {student} (frozen, mean-pooled){' centred' if center else ''}"] = pooled
            for label, vectors in spaces.items():
                p = scores(vectors, test)
                out[label] = {
                    "auc": round(auc(test["label"], p), 4),
                    "user_auc": round(grouped_auc(test["label"], p, user), 4),
                }
    write_text(RECORDS / "taste.json", json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


def _seconds(call, *args, **kwargs) -> float:
    """Wall seconds of ``call(*args, **kwargs)``."""
    started = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - started


# ---------------------------------------------------------------------- report
def _models(records: dict[str, dict], cell: str) -> dict[str, dict]:
    """The results of ``cell``; the teacher swap borrows the teacher-free rows of ``random``."""
    models = dict(records.get(cell, {}).get("results", {}).get("models", {}))
    if cell.startswith("random@") and "random" in records:
        for name in ("dcnv2", "vanilla"):
            models.setdefault(name, records["random"]["results"]["models"].get(name))
    return models


def main_table(records: dict[str, dict], cell: str) -> str:
    """Rows = DCNv2, DCNv2 + teacher, the student variants; AUC, vs DCNv2, vs vanilla, LogLoss, per-user."""
    models = _models(records, cell)
    if not models:
        return f"(run `python bench/bench_gpt4sm.py run --cells {cell}`)\n"
    lines = [
        "| method | AUC ± std (seeds) | vs DCNv2: points / RelaImpr | vs vanilla | LogLoss | user AUC | user nDCG@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ROWS:
        entry = models.get(name)
        if not entry:
            continue
        lines.append(
            f"| {name} | {auc_cell(entry)} | {versus(entry, models.get('dcnv2'))} | "
            f"{versus(entry, models.get('vanilla')) if name in STUDENTS else '-'} | {entry['logloss']:.4f} | "
            f"{entry.get('user_auc', float('nan')):.4f} | {entry.get('user_ndcg10', float('nan')):.4f} |"
        )
    return "\n".join(lines) + "\n"


def segment_table(records: dict[str, dict], cell: str) -> str:
    """Long-tail 2x2 test AUC of every row of the main table."""
    models = _models(records, cell)
    if not models:
        return "-\n"
    segments = next(iter(models.values()))["per_segment"]
    lines = ["| method | " + " | ".join(segments) + " |", "|---|" + "---|" * len(segments)]
    for name in ROWS:
        if models.get(name):
            lines.append(f"| {name} | " + " | ".join(f"{models[name]['per_segment'][s]:.4f}" for s in segments) + " |")
    return "\n".join(lines) + "\n"


def search_table(records: dict[str, dict]) -> str:
    """The ``<protocol>+<change>`` cells against the same variant in the protocol's table and against vanilla,
    both from the protocol's cell on the same seeds (the first n of 2024, 2025, 2026)."""

    def same_seeds(entry: dict | None, n: int) -> str:
        return f"{sum(entry['auc_seeds'][:n]) / n:.4f}" if entry else "-"

    lines = [
        "| split | change | variant | AUC ± std (seeds) | same variant, the split's table | vanilla |",
        "|---|---|---|---|---|---|",
    ]
    for name, record in records.items():
        protocol, _, change = name.partition("+")
        if protocol not in PROTOCOLS or not change:
            continue
        base = _models(records, protocol)
        for variant, entry in record["results"]["models"].items():
            n = len(entry["auc_seeds"])
            lines.append(
                f"| {protocol} | {change} | {variant} | {auc_cell(entry)} | {same_seeds(base.get(variant), n)} | "
                f"{same_seeds(base.get('vanilla'), n)} |"
            )
    return "\n".join(lines) + "\n"


def cost_table(records: dict[str, dict]) -> str:
    """Training seconds per seed (the cells' stage times / seeds) and the latency record."""
    lines = ["| stage instance | random (s, all seeds) | cold_item (s) |", "|---|---|---|"]
    labels = sorted({k for c in PROTOCOLS for k in records.get(c, {}).get("stage_seconds", {}) if "gpt4sm" in k
                     or k in ("train@dcnv2", "hidden_states_teacher")})  # fmt: skip
    for label in labels:
        lines.append(
            f"| {label} | "
            + " | ".join(str(records.get(c, {}).get("stage_seconds", {}).get(label, "-")) for c in PROTOCOLS)
            + " |"
        )
    path = RECORDS / "latency-random.json"
    if path.is_file():
        latency = json.loads(path.read_text())
        lines += [
            "",
            f"Inference on {latency['rows']} test rows in one batch ({latency['threads']} threads), the known "
            "texts' states in memory. A NEW item's text must first be encoded: by the student for the student "
            f"variants ({latency['new_text_student_ms']} ms), by the teacher for EaaF and DCNv2 + teacher "
            f"({latency['new_text_teacher_ms']} ms); DCNv2 alone needs neither:",
            "",
            "| variant | µs per record | teacher at inference |",
            "|---|---|---|",
        ]
        for name, figures in latency["variants"].items():
            lines.append(
                f"| {name} | {figures['us_per_record']} | {'yes' if figures['teacher_at_inference'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def distance_table() -> str:
    """The distance record: one row per cell, one column per model whose c lives in the teacher's space."""
    path = RECORDS / "distance.json"
    if not path.is_file():
        return "(run `python bench/bench_gpt4sm.py distance`)\n"
    found = json.loads(path.read_text())
    columns = ("vanilla", "eaar", "eaap (copy phase only)", "eaap", "eaap_copyemb")
    lines = ["| cell | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for cell, values in found.items():
        lines.append(f"| {cell} | " + " | ".join(str(values.get(c, "-")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def taste_table() -> str:
    """The taste record: global and per-user test AUC of the similarity score in each text space."""
    path = RECORDS / "taste.json"
    if not path.is_file():
        return "(run `python bench/bench_gpt4sm.py taste`)\n"
    lines = ["| text space | test AUC | per-user AUC |", "|---|---|---|"]
    for name, figures in json.loads(path.read_text()).items():
        lines.append(f"| {name} | {figures['auc']:.4f} | {figures['user_auc']:.4f} |")
    return "\n".join(lines) + "\n"


def report() -> None:
    from llm4ctr.atomic import replace_block

    records = cell_records()
    doc = ROOT / "docs" / "RESULTS_GPT4SM.md"
    for cell in (*PROTOCOLS, f"random@{SWAP_TEACHER}"):
        replace_block(doc, f"gpt4sm {cell}", main_table(records, cell))
        replace_block(doc, f"gpt4sm {cell} segments", segment_table(records, cell))
    replace_block(doc, "gpt4sm search", search_table(records))
    replace_block(doc, "gpt4sm distance", distance_table())
    replace_block(doc, "gpt4sm taste", taste_table())
    replace_block(doc, "gpt4sm cost", cost_table(records))
    print(doc.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("run", "rescore", "latency", "distance", "taste", "report"))
    parser.add_argument("--cells", nargs="*", help="cells to run (default: all, in order)")
    parser.add_argument("--cell", default="random", help="latency: the cell whose checkpoints are timed")
    parser.add_argument("--update", action="store_true", help="fast-forward each cell's clone to this HEAD")
    args = parser.parse_args()
    if args.what in ("run", "rescore"):
        run_cells(cells(), args.cells, args.what, WORK, RECORDS, args.update)
    elif args.what == "latency":
        latency(args.cell)
    elif args.what == "distance":
        distance()
    elif args.what == "taste":
        taste()
    else:
        report()


if __name__ == "__main__":
    main()
