"""LLM4MSR (GitHub issue 6): what the meta layers cost next to each backbone, and the results table.

    python bench/bench_llm4msr.py [--threads 1] [--repeats 200] [--train-steps 8]
    python bench/bench_llm4msr.py table
    python bench/bench_llm4msr.py probe

Default command — cost, on the real ML-100K features (``artifacts/features``), for each of the six
backbones, plain against ``_ours`` (and ``_dn``/``_ep`` for reference). The models are the seed
checkpoints of the real runs when they exist (artifacts/msr, artifacts/llm4msr), else freshly built
with params ``llm4msr`` and random LLM states (the cost does not depend on the values). The variants
take turns inside every repeat so machine noise (a shared 2-core CPU) hits all alike. Measured:

* inference latency per sample (median over ``--repeats``, eval mode, ``torch.inference_mode``):
  - ``request``: one row (one user, one candidate);
  - ``candidates``: one user with 100 candidate items (the user-side fields of the first row copied
    onto 100 test rows) — the serving shape, where _ours builds the user's meta layers once;
  - ``mixed``: 8192 test rows of many users — offline scoring, where _ours runs its meta layers per
    row through the meta-network's hidden code (no per-row weight matrices);
* training throughput: samples/s over ``--train-steps`` AdamW steps at ``train.batch_size``.

``table`` — quality: scores the test predictions of every variant under artifacts/msr and
artifacts/llm4msr exactly as the evaluate stage does (assets.evaluate.score_seed / aggregate, mean
over seeds) and writes the paper-style per-scenario AUC table (assets.llm4msr.scenario_table), the
seed spread, the gain of _ours per scenario with each scenario's training sparsity, and the run
times.

``probe`` — what the cached user states (artifacts/hidden_states_user) say about each user: linear
probes under 5-fold cross-validation, from the standardized states and, as the floor, from Gaussian
noise of the same shape: ridge R^2 of the user's training positive rate, and accuracy of logistic
probes for the user's age group (the scenario), gender and occupation next to the majority class.

Each command writes its part of docs/RESULTS_LLM4MSR.md between markers (text around them is kept).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets.evaluate import TestSet, aggregate  # noqa: E402
from assets.features import load_encoded  # noqa: E402
from assets.llm4msr import BASELINE_STAGE, STAGE, msr_hparams, scenario_table  # noqa: E402
from assets.prompts import scenario_stats  # noqa: E402
from llm4ctr.atomic import replace_block  # noqa: E402
from llm4ctr.env import apply_defaults  # noqa: E402
from llm4ctr.params import load_params  # noqa: E402
from llm4ctr.paths import artifact_dir  # noqa: E402
from models.msr import BACKBONES, build_msr, load_msr, parse_variant, variant_name  # noqa: E402

RESULTS = ROOT / "docs" / "RESULTS_LLM4MSR.md"
ENHANCEMENTS = ("plain", "dn", "ep", "ours")


def stage_of(variant: str) -> str:
    return STAGE if parse_variant(variant)[1] == "ours" else BASELINE_STAGE


def model_for(params, encoder, variant: str) -> tuple[torch.nn.Module, str]:
    """The first seed's checkpoint of the real run, else a fresh model (random LLM states for _ours)."""
    dataset = params.get_path("data.name")
    folder = artifact_dir(ROOT, stage_of(variant), dataset) / variant
    checkpoints = sorted(folder.glob("seed*/model.safetensors"))
    if checkpoints:
        return load_msr(checkpoints[0].parent), str(checkpoints[0].parent.relative_to(ROOT))
    torch.manual_seed(0)
    hparams = msr_hparams(params, variant)
    model = build_msr(variant, encoder.vocab_sizes, **hparams)
    if variant.endswith("_ours"):
        ours = model.enhancement
        n_users, dim = ours.users.states.shape
        ours.set_llm_states(
            torch.randn(n_users, dim), torch.ones(n_users, dtype=torch.bool), torch.randn(model.num_scenarios, dim)
        )
    return model.eval(), "fresh (no checkpoint)"


def candidate_batch(train: dict[str, np.ndarray], test: dict[str, np.ndarray], n: int) -> dict[str, torch.Tensor]:
    """One user with ``n`` candidates: the user-side fields (one value per user in training) of test
    row 0 copied onto the first ``n`` test rows."""
    users = train["user_id"]
    batch = {k: torch.as_tensor(v[:n].copy()) for k, v in test.items() if k != "label"}
    for field, values in train.items():
        if field == "label" or values.ndim != 1:
            continue
        per_user = pd.Series(values).groupby(users).nunique()
        if (per_user == 1).all():
            batch[field][:] = batch[field][0]
    return batch


def latency(models: dict[str, torch.nn.Module], batches: dict[str, dict], repeats: int) -> dict:
    """Median (and p90) microseconds per sample of every model on every batch; models take turns."""
    times = {(m, b): [] for m in models for b in batches}
    with torch.inference_mode():
        for name, batch in batches.items():
            for model in models.values():
                model(batch)  # warm-up (and the inference caches of _ours)
            n = max(5, repeats if len(next(iter(batch.values()))) < 1000 else repeats // 20)
            for _ in range(n):
                for m, model in models.items():
                    started = time.perf_counter()
                    model(batch)
                    times[(m, name)].append(time.perf_counter() - started)
    out = {}
    for (m, b), values in times.items():
        rows = len(next(iter(batches[b].values())))
        out.setdefault(m, {})[b] = {
            "us_per_sample": round(float(np.median(values)) / rows * 1e6, 2),
            "p90_us_per_sample": round(float(np.percentile(values, 90)) / rows * 1e6, 2),
        }
    return out


def train_throughput(model: torch.nn.Module, train: dict[str, np.ndarray], batch_size: int, steps: int) -> float:
    """Training samples/s over ``steps`` AdamW steps (one untimed warm-up step)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(steps + 1):
        rows = rng.choice(len(train["label"]), batch_size, replace=False)
        batches.append({k: torch.as_tensor(v[rows]) for k, v in train.items()})
    started = None
    for i, batch in enumerate(batches):
        if i == 1:
            started = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)["logit"], batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return steps * batch_size / (time.perf_counter() - started)


def bench(args) -> str:
    params = load_params(ROOT / "params.yaml")
    encoder, arrays = load_encoded(ROOT, params.get_path("data.name"))
    torch.set_num_threads(args.threads)
    test = arrays["test"]
    batches = {
        "request": {k: torch.as_tensor(v[:1]) for k, v in test.items() if k != "label"},
        "candidates": candidate_batch(arrays["train"], test, 100),
        "mixed": {k: torch.as_tensor(v[:8192]) for k, v in test.items() if k != "label"},
    }
    batch_size = int(params.get_path("train.batch_size"))
    rows, sources = [], {}
    for backbone in BACKBONES:
        variants = [variant_name(backbone, e) for e in ENHANCEMENTS]
        models = {}
        for v in variants:
            models[v], sources[v] = model_for(params, encoder, v)
        lat = latency(models, batches, args.repeats)
        for v in variants:
            sps = train_throughput(models[v], arrays["train"], batch_size, args.train_steps)
            rows.append(
                {
                    "variant": v,
                    **{f"{b}_us": lat[v][b]["us_per_sample"] for b in batches},
                    "train_samples_per_s": round(sps, 1),
                }
            )
        print(json.dumps(rows[-len(variants) :]), flush=True)
    frame = pd.DataFrame(rows).set_index("variant")
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"shared CPU; repeats {args.repeats}, {args.train_steps} training steps at batch {batch_size}. "
        "Latency in microseconds per sample (median); x = ratio to the plain backbone.",
        "",
        "| variant | request (1 row) | x | candidates (1 user x 100) | x | mixed (8192 rows) | x "
        "| train samples/s | x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v, row in frame.iterrows():
        base = frame.loc[parse_variant(v)[0]]
        cells = []
        for col in ("request_us", "candidates_us", "mixed_us", "train_samples_per_s"):
            cells += [f"{row[col]:.1f}", f"{row[col] / base[col]:.2f}"]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "Models: " + ", ".join(f"{v}: {s}" for v, s in sources.items())]
    return "\n".join(lines) + "\n"


def table(args) -> str:
    params = load_params(ROOT / "params.yaml")
    dataset = params.get_path("data.name")
    test_set = TestSet.load(params, ROOT)
    train = test_set.train
    results, spreads, times = {}, {}, {}
    for backbone in BACKBONES:
        for e in ENHANCEMENTS:
            v = variant_name(backbone, e)
            folder = artifact_dir(ROOT, stage_of(v), dataset) / v
            if not (folder / "predictions.parquet").is_file():
                continue
            per_seed = [test_set.score(p) for p in test_set.seed_probs(folder / "predictions.parquet").values()]
            results[v] = aggregate(per_seed)
            spreads[v] = {
                s: float(np.std([p["per_scenario"][s] for p in per_seed])) for s in per_seed[0]["per_scenario"]
            }
            summary = json.loads((folder / "summary.json").read_text())
            times[v] = summary["seeds"]
    scenarios = sorted(results[next(iter(results))]["per_scenario"]) if results else []
    stats = scenario_stats(train, scenarios).set_index("scenario")
    lines = [
        "Test AUC per scenario and overall, mean over seeds (bold: best of each backbone block).",
        "",
        scenario_table(results, scenarios),
        "Per-scenario AUC standard deviation over seeds:",
        "",
        "| model | " + " | ".join(scenarios) + " |",
        "|---" * (len(scenarios) + 1) + "|",
    ]
    lines += [f"| {v} | " + " | ".join(f"{spreads[v][s]:.4f}" for s in scenarios) + " |" for v in results]
    lines += [
        "",
        "Gain of _ours over the plain backbone and over the better of _DN/_EP, per scenario (AUC points x 100):",
        "",
        "| backbone | " + " | ".join(f"{s} vs plain | {s} vs best DN/EP" for s in scenarios) + " | overall vs plain |",
        "|---" * (2 * len(scenarios) + 2) + "|",
    ]
    for backbone in BACKBONES:
        ours, plain = results.get(f"{backbone}_ours"), results.get(backbone)
        if not (ours and plain):
            continue
        cells = []
        for s in scenarios:
            others = [
                results[f"{backbone}_{e}"]["per_scenario"][s] for e in ("dn", "ep") if f"{backbone}_{e}" in results
            ]
            cells += [
                f"{100 * (ours['per_scenario'][s] - plain['per_scenario'][s]):+.2f}",
                f"{100 * (ours['per_scenario'][s] - max(others)):+.2f}" if others else "n/a",
            ]
        lines.append(f"| {backbone} | " + " | ".join(cells) + f" | {100 * (ours['auc'] - plain['auc']):+.2f} |")
    lines += [
        "",
        "Scenarios (training split): "
        + "; ".join(
            f"{s}: {int(stats.loc[s, 'interactions'])} rows, {int(stats.loc[s, 'users'])} users, sparsity "
            f"{stats.loc[s, 'sparsity']:.4f}, positive rate {stats.loc[s, 'positive_rate']:.3f}"
            for s in scenarios
        ),
        "",
        "Training per seed (best epoch / epochs run / seconds, as recorded in each variant's summary.json):",
        "",
        "| model | " + " | ".join(f"seed {s}" for s in next(iter(times.values()), {})) + " | alpha (_ours) |",
        "|---" * (len(next(iter(times.values()), {})) + 2) + "|",
    ]
    for v, seeds in times.items():
        alphas = [str(s["alpha"]) for s in seeds.values() if "alpha" in s]
        lines.append(
            f"| {v} | "
            + " | ".join(f"{s['best_epoch']}/{s['epochs']}/{s['train_seconds']:.0f}s" for s in seeds.values())
            + f" | {', '.join(alphas) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def probe(args) -> str:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import cross_val_score

    from assets.llm4msr import read_states
    from assets.split import load_splits

    params = load_params(ROOT / "params.yaml")
    dataset = params.get_path("data.name")
    ids, states = read_states(ROOT, dataset, "user")
    x = states.numpy()
    x = (x - x.mean(0)) / np.where(x.std(0) > 1e-6, x.std(0), 1.0)
    noise = np.random.default_rng(0).standard_normal(x.shape)
    train = load_splits(ROOT, dataset)["train"]
    users = train.assign(user_id=train["user_id"].astype(str)).groupby("user_id")
    rate = users["label"].mean().reindex(ids.to_numpy())
    keep = rate.notna().to_numpy()
    lines = [
        f"Cached user states: {len(x)} users x {x.shape[1]} dims ({params.get_path('llm.name')}, "
        f"{params.get_path('hidden_states.user.pooling')} pooling); 5-fold cross-validation, {keep.sum()} users "
        "with training rows.",
        "",
        "| target | probe | from LLM states | from noise | majority class |",
        "|---|---|---|---|---|",
    ]
    ridge = RidgeCV(alphas=np.logspace(-1, 4, 12))
    r2 = [cross_val_score(ridge, feats[keep], rate.to_numpy()[keep], cv=5, scoring="r2").mean() for feats in (x, noise)]
    lines.append(f"| training positive rate | ridge R^2 | {r2[0]:.3f} | {r2[1]:.3f} | - |")
    for column in ("scenario", "gender", "occupation"):
        if column not in train.columns:
            continue
        target = users[column].first().astype(str).reindex(ids.to_numpy()).to_numpy()[keep]
        logistic = LogisticRegression(max_iter=2000, C=0.1)
        acc = [cross_val_score(logistic, feats[keep], target, cv=5).mean() for feats in (x, noise)]
        majority = pd.Series(target).value_counts(normalize=True).iloc[0]
        lines.append(f"| {column} | logistic accuracy | {acc[0]:.3f} | {acc[1]:.3f} | {majority:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    apply_defaults()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=("cost", "table", "probe"), default="cost")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=8)
    args = parser.parse_args()
    body = {"table": table, "probe": probe, "cost": bench}[args.what](args)
    print(body)
    replace_block(RESULTS, f"bench_llm4msr {args.what}", body)


if __name__ == "__main__":
    main()
