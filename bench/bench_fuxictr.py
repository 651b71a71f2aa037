"""Benchmark our DNN, DeepFM and DCNv2 against FuxiCTR's on the same split (GitHub issue 3).

    make bench-fuxictr                      # creates bench/.venv-fuxictr when missing, then runs this
    python bench/bench_fuxictr.py [--models dnn deepfm dcnv2] [--seeds 2024 2025 2026] [--threads 1]

Both sides train on the rows of ``artifacts/split/<data.name>/{train,valid,test}.parquet`` with the
same fields and the same matched hyper-parameters (embedding size, MLP, cross layers from the model
defaults plus ``ctr.hparams``; lr, batch size, max epochs and early-stopping patience from params.yaml
``train``; vocabulary ``min_count`` from ``features``), with the same number of torch threads.

* Our side: models.features.FeatureEncoder -> models.ctr.build_model -> models.trainer.Trainer.
* FuxiCTR side: bench/fuxictr_runner.py under bench/.venv-fuxictr (fuxictr 2.3.10 pins clash with
  ours): FuxiCTR's FeatureProcessor, npz RankDataLoader and BaseModel.fit. It reads copies of the
  split files, raw strings in every field (its own tokenizer builds the vocabularies; genres is a
  ``|``-separated sequence field) except age and year, which arrive as OUR quantile-bucket ids:
  FuxiCTR 2.3.10's ``quantile_bucket`` processor fits edges but its transform leaves the raw numbers,
  so bucketizing there would not be identical. The bench fails unless every field's vocabulary size
  on each side is the expected one.

Every (model, seed, side) run is its own child process, run one after the other (never concurrently),
the side that goes first alternating per seed so machine noise hits both alike. Measured per run:
test AUC and LogLoss (both sides' test predictions scored by models.metrics), train samples/s
(training rows processed / pure training time: the epochs' forward, backward, optimizer steps and
batching, without validation or checkpointing; also per median epoch and per CPU-second, which
machine load and warm-up distort less) and the child's peak RSS (``os.wait4`` rusage), plus
its peak anonymous RSS sampled at 10 Hz from /proc: RSS also counts the pages of shared libraries
the child touched, which grow with how hot those files are in the page cache (our venv's
libtorch_cpu.so is used by every process on this machine, the FuxiCTR venv's copy is not).
Finished runs are kept under ``--work`` and reused when re-run with the same config, so an interrupted
bench resumes. The table goes to stdout and into docs/RESULTS_FUXICTR.md between markers (text
around them is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FUXICTR_PYTHON = ROOT / "bench" / ".venv-fuxictr" / "bin" / "python"
RUNNER = ROOT / "bench" / "fuxictr_runner.py"
RESULTS = ROOT / "docs" / "RESULTS_FUXICTR.md"
WORK = ROOT / "artifacts" / ".work" / "bench-fuxictr"
MODELS = ("dnn", "deepfm", "dcnv2")
SIDES = ("ours", "fuxictr")
# targets of issue 3: AUC within 0.001 of FuxiCTR's (mean over seeds), speed >= 1.0x, memory no higher
AUC_TOLERANCE = 0.001


# ---------------------------------------------------------------------- configuration
def matched_config(params, model: str) -> dict:
    """The hyper-parameters both sides get for ``model``: model defaults + ctr.hparams, train section."""
    from llm4ctr.errors import ParamsError
    from models.ctr import hyperparameters

    hp = {**hyperparameters(model), **((params.get_path("ctr.hparams", None) or {}).get(model) or {})}
    unsupported = {k: hp.get(k) for k in ("dropout", "batch_norm", "dense_dim") if hp.get(k)}
    if hp.get("structure", "parallel") != "parallel":
        unsupported["structure"] = hp["structure"]
    if unsupported:
        raise ParamsError(
            f"ctr.hparams.{model}: the FuxiCTR bench matches dropout 0, no batch norm, no dense "
            f"input and the parallel DCNv2 only; got {unsupported}"
        )
    matched = {"embedding_dim": int(hp["embedding_dim"]), "hidden_units": [int(u) for u in hp["hidden_units"]]}
    if "num_cross_layers" in hp:
        matched["num_cross_layers"] = int(hp["num_cross_layers"])
    for key in ("lr", "batch_size", "max_epochs", "patience"):
        matched[key] = params.get_path(f"train.{key}")
    return matched


def prepare_fuxictr_inputs(params, splits: dict, out_dir: Path) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Write the split files FuxiCTR reads: the split files' rows and columns, with age/year replaced
    by our bucket ids (as string tokens) and the label as float.

    Returns the field list (name, kind, separator) in our field order and the vocabulary sizes each
    side must end up with: ours are the encoder's; FuxiCTR's are the same for categorical and
    multi-valued fields, and for the bucketized ones (which it sees as tokens) the number of distinct
    bucket ids in train + padding + its own OOV row (our OOV id, used by missing values, is a token
    to FuxiCTR, and buckets no training row falls in are not).
    """
    from models.features import SEPARATOR, FeatureEncoder, default_spec

    spec = default_spec(splits["train"].columns, n_bins=int(params.get_path("features.n_bins")))
    encoder = FeatureEncoder.fit(splits["train"], spec, min_count=int(params.get_path("features.min_count")))
    numeric = [f.name for f in spec.fields if f.kind == "numeric"]
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = {"ours": dict(encoder.vocab_sizes), "fuxictr": dict(encoder.vocab_sizes)}
    for name, frame in splits.items():
        encoded = encoder.transform(frame[numeric])
        table = frame.assign(
            label=frame["label"].astype("float64"), **{field: encoded[field].astype(str) for field in numeric}
        )
        table.to_parquet(out_dir / f"{name}.parquet", index=False)
        if name == "train":
            expected["fuxictr"].update({field: len(np.unique(encoded[field])) + 2 for field in numeric})
    fields = [
        {"name": f.name, "kind": "categorical" if f.kind == "numeric" else f.kind, "separator": SEPARATOR}
        for f in spec.fields
    ]
    return fields, expected


# ---------------------------------------------------------------------- our side (child process)
def peak_rss_mb() -> float:
    """This process's RSS high-water mark so far (VmHWM) in MB (the FuxiCTR runner has its own copy)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def _encode(dataset: str, n_bins: int, min_count: int):
    """Fit our encoder on train and encode the three splits, reading only the feature columns and the
    label; the raw tables are dropped on return, as the pipeline's features stage drops them before any
    training process starts."""
    import pyarrow.parquet as pq

    from assets.split import load_splits
    from llm4ctr.paths import artifact_dir
    from models.features import FeatureEncoder, default_spec

    columns = pq.read_schema(artifact_dir(ROOT, "split", dataset) / "train.parquet").names
    spec = default_spec(columns, n_bins=n_bins)
    splits = load_splits(ROOT, dataset, columns=spec.names + ["label"])
    encoder = FeatureEncoder.fit(splits["train"], spec, min_count)
    return encoder, {name: encoder.transform(frame) for name, frame in splits.items()}


def _timed(train_epoch, wall: list, cpu: list):
    """Wrap Trainer._train_epoch (one pass over the training rows, no evaluation) to record its wall
    and CPU seconds, as the FuxiCTR runner's Clock does for BaseModel.train_epoch."""

    def timed(*args):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        loss = train_epoch(*args)
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
        return loss

    return timed


def run_ours(config: dict, out_dir: Path) -> dict:
    """Train our model once (the child process of an ``ours`` run); returns the result record."""
    import torch

    from assets.runs import train_config
    from llm4ctr.params import load_params
    from models.ctr import build_model
    from models.trainer import Trainer

    threads = int(config["threads"])
    torch.set_num_threads(threads)
    params = load_params(ROOT / "params.yaml")
    hp = config["hparams"]
    started = time.perf_counter()
    encoder, arrays = _encode(config["dataset"], int(params.get_path("features.n_bins")), config["min_count"])
    preprocess_seconds = time.perf_counter() - started
    torch.manual_seed(config["seed"])
    model_hp = {k: hp[k] for k in ("embedding_dim", "hidden_units", "num_cross_layers") if k in hp}
    model = build_model(config["model"], encoder.vocab_sizes, **model_hp)
    train = train_config(
        params,
        config["seed"],
        lr=hp["lr"],
        batch_size=hp["batch_size"],
        max_epochs=hp["max_epochs"],
        patience=hp["patience"],
        num_threads=threads,
        device="cpu",
        progress=False,
    )
    trainer = Trainer(model, train)
    wall, cpu = [], []
    trainer._train_epoch = _timed(trainer._train_epoch, wall, cpu)
    rss_before_fit_mb = peak_rss_mb()
    result = trainer.fit(arrays["train"], arrays["valid"], out_dir / "ckpt", resume=False)
    np.save(out_dir / "test_pred.npy", trainer.predict(arrays["test"]))
    np.save(out_dir / "test_label.npy", arrays["test"]["label"])
    return {
        "side": "ours",
        "model": config["model"],
        "seed": config["seed"],
        "threads": torch.get_num_threads(),
        "train_rows": len(arrays["train"]["label"]) * len(wall),
        "epoch_seconds": wall,
        "epoch_cpu_seconds": cpu,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "valid_auc": result.best_auc,
        "valid_history": [{"AUC": h["valid_auc"], "logloss": h["valid_logloss"]} for h in result.history],
        "preprocess_seconds": preprocess_seconds,
        "rss_before_fit_mb": rss_before_fit_mb,
        "vocab_sizes": encoder.vocab_sizes,
        "n_params": sum(p.numel() for p in model.parameters()),
    }


# ---------------------------------------------------------------------- orchestration
def child_env(threads: int) -> dict[str, str]:
    """The same thread caps for both sides (torch, BLAS, OpenMP, polars/rayon); Ray telemetry off."""
    env = dict(os.environ)
    for key in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "POLARS_MAX_THREADS",
        "RAYON_NUM_THREADS",
    ):
        env[key] = str(threads)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_child(side: str, config: dict, run_dir: Path, fuxictr_python: Path) -> dict:
    """One run in a fresh child process; returns its result record plus the parent-measured peak RSS."""
    config_path = run_dir / "config.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").unlink(missing_ok=True)  # never let a crashed run leave an older result behind
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    if side == "ours":
        cmd = [sys.executable, str(Path(__file__).resolve()), "_ours", str(config_path), str(run_dir)]
    else:
        cmd = [str(fuxictr_python), str(RUNNER), str(config_path), str(run_dir)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    peak_anon_kb = 0
    with open(run_dir / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(config["threads"]), cwd=ROOT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # wait4: the rusage of exactly this child
            if pid:
                break
            peak_anon_kb = max(peak_anon_kb, _rss_anon_kb(proc.pid))
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (run_dir / "log.txt").read_text()[-3000:]
        raise RuntimeError(f"{side} {config['model']} seed {config['seed']} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads((run_dir / "result.json").read_text())
    result.update(
        wall_seconds=time.perf_counter() - started,
        child_peak_rss_mb=usage.ru_maxrss / 1024,
        peak_anon_mb=peak_anon_kb / 1024,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _rss_anon_kb(pid: int) -> int:
    """The process's current anonymous (private, not file-backed) resident memory in kB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cached(run_dir: Path, config: dict) -> dict | None:
    """A finished run's result when it was made with exactly ``config`` (so an interrupted bench resumes)."""
    try:
        same = json.loads((run_dir / "config.json").read_text()) == config
        result = json.loads((run_dir / "result.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return result if same and "peak_anon_mb" in result and "epoch_cpu_seconds" in result else None


def score(result: dict, run_dir: Path, test_labels: np.ndarray) -> dict:
    """Test AUC/LogLoss with models.metrics, after checking the predictions are in split-file row order."""
    from models.metrics import auc, logloss

    labels = np.load(run_dir / "test_label.npy").astype(np.float64).ravel()
    if not np.array_equal(labels, test_labels):
        raise RuntimeError(f"{run_dir}: test labels differ from the split file's (rows reordered or dropped)")
    pred = np.load(run_dir / "test_pred.npy").astype(np.float64).ravel()
    per_epoch = result["train_rows"] / result["epochs"]
    return {
        **result,
        "test_auc": auc(labels, pred),
        "test_logloss": logloss(labels, pred),
        "train_seconds": sum(result["epoch_seconds"]),
        "samples_per_s": result["train_rows"] / sum(result["epoch_seconds"]),
        "median_epoch_samples_per_s": per_epoch / float(np.median(result["epoch_seconds"])),
        "samples_per_cpu_s": result["train_rows"] / sum(result["epoch_cpu_seconds"]),
    }


def check_vocab(result: dict, expected: dict[str, int]) -> None:
    """The identical feature set: every field's vocabulary size is the one expected for that side."""
    sizes = {k: int(v) for k, v in result["vocab_sizes"].items()}
    if sizes != expected:
        raise RuntimeError(
            f"{result['side']} {result['model']} seed {result['seed']}: vocabulary sizes {sizes} "
            f"differ from the expected {expected}"
        )


# ---------------------------------------------------------------------- report
def _mean_std(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def _side_stats(runs: list[dict]) -> dict:
    """One side's figures for one model: metric lists over seeds, mean throughputs, max memory."""
    return {
        "auc": [r["test_auc"] for r in runs],
        "logloss": [r["test_logloss"] for r in runs],
        "sps": float(np.mean([r["samples_per_s"] for r in runs])),
        "median_sps": float(np.mean([r["median_epoch_samples_per_s"] for r in runs])),
        "cpu_sps": float(np.mean([r["samples_per_cpu_s"] for r in runs])),
        "rss": float(np.max([r["child_peak_rss_mb"] for r in runs])),
        "anon": float(np.max([r["peak_anon_mb"] for r in runs])),
        "epochs": ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in runs),
        "params": runs[0]["n_params"],
    }


def summarize(runs: list[dict], models: list[str]) -> str:
    """The markdown tables: both sides per model (mean ± std over seeds), then ratios against the targets."""
    side_rows = [
        "| model | side | test AUC | test LogLoss | train samples/s | median epoch samples/s "
        "| samples per CPU-s | peak RSS (MB) | peak anon RSS (MB) | epochs (best) | params |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratio_rows = [
        "| model | ΔAUC ours − FuxiCTR (target ≥ −0.001) | samples/s ours/FuxiCTR (≥ 1.0x) "
        "| median epoch | per CPU-s | peak RSS ours/FuxiCTR (≤ 1.0x) | peak anon RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    mark = {True: "pass", False: "**FAIL**"}
    for model in models:
        stats = {side: _side_stats([r for r in runs if r["model"] == model and r["side"] == side]) for side in SIDES}
        for side, st in stats.items():
            side_rows.append(
                f"| {model} | {side} | {_mean_std(st['auc'])} | {_mean_std(st['logloss'])} | "
                f"{st['sps']:,.0f} | {st['median_sps']:,.0f} | {st['cpu_sps']:,.0f} | "
                f"{st['rss']:,.0f} | {st['anon']:,.0f} | "
                f"{st['epochs']} | {st['params']:,} |"
            )
        ours, fux = stats["ours"], stats["fuxictr"]
        d_auc = float(np.mean(ours["auc"]) - np.mean(fux["auc"]))
        speed, rss = ours["sps"] / fux["sps"], ours["rss"] / fux["rss"]
        ratio_rows.append(
            f"| {model} | {d_auc:+.4f} {mark[d_auc >= -AUC_TOLERANCE]} "
            f"| {speed:.2f}x {mark[speed >= 1.0]} "
            f"| {ours['median_sps'] / fux['median_sps']:.2f}x | {ours['cpu_sps'] / fux['cpu_sps']:.2f}x "
            f"| {rss:.2f}x {mark[rss <= 1.0]} "
            f"| {ours['anon'] / fux['anon']:.2f}x |"
        )
    return "\n".join(side_rows + [""] + ratio_rows)


def per_seed_table(runs: list[dict]) -> str:
    lines = [
        "| model | seed | side | test AUC | test LogLoss | samples/s | per CPU-s | train s | peak RSS (MB) "
        "| RSS before fit | peak anon | epochs (best) | load 1 min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (MODELS.index(r["model"]), r["seed"], r["side"])):
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['side']} | {r['test_auc']:.4f} | {r['test_logloss']:.4f} | "
            f"{r['samples_per_s']:,.0f} | {r['samples_per_cpu_s']:,.0f} | {r['train_seconds']:.1f} | "
            f"{r['child_peak_rss_mb']:,.0f} | {r['rss_before_fit_mb']:,.0f} | {r['peak_anon_mb']:,.0f} | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['load_before']:.2f}→{r['load_after']:.2f} |"
        )
    return "\n".join(lines)


def report(runs: list[dict], models: list[str], info: dict, command: str) -> str:
    """The generated part of docs/RESULTS_FUXICTR.md: command, machine, setup, tables. Load and wall time
    come from the run records, so re-rendering from finished runs reproduces the same text."""
    import torch

    probe = "import fuxictr, torch; print(fuxictr.__version__, torch.__version__)"
    versions = subprocess.run(
        [str(info["fuxictr_python"]), "-c", probe], capture_output=True, text=True, env=child_env(1)
    ).stdout.split() or ["?", "?"]
    fields = ", ".join(f["name"] for f in info["fields"])
    loads = [r[key] for r in runs for key in ("load_before", "load_after")]
    wall = sum(r["wall_seconds"] for r in runs)
    return "\n".join(
        [
            f"Command (from the repository root; `make bench-fuxictr` runs it with no arguments): `{command}`",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, Python "
            f"{platform.python_version()}; ours torch {torch.__version__}, "
            f"FuxiCTR {versions[0]} with torch {versions[1]}; "
            f"{info['threads']} torch thread(s) per side, FuxiCTR DataLoader num_workers={info['num_workers']}; "
            f"runs one at a time, side order alternating per seed; {wall / 60:.1f} min of runs. 1-minute load "
            f"average (`uptime`) at the start and end of each run: {min(loads):.1f}-{max(loads):.1f} on "
            f"{os.cpu_count()} cores (per run in the per-seed table).",
            "",
            f"Data: `artifacts/split/{info['dataset']}/` ({info['rows']}); fields {fields} (genres a `|`-sequence, "
            f"mean-pooled; age/year {info['n_bins']} quantile buckets), min_count {info['min_count']}. "
            "Vocabulary sizes, "
            f"checked on every run: ours {info['vocab_sizes']['ours']}; FuxiCTR {info['vocab_sizes']['fuxictr']} "
            "(age/year reach FuxiCTR as bucket-id tokens: its vocabulary holds the buckets seen in train, our OOV id "
            "that missing years carry as a token, padding and its own OOV).",
            f"Matched hyper-parameters: {json.dumps({m: info['hparams'][m] for m in models})}.",
            "",
            f"Mean ± std over seeds {', '.join(str(s) for s in info['seeds'])}; throughputs are means over seeds, "
            "memory the max over seeds. Train samples/s = training rows processed / pure training time (all epochs, "
            "no evaluation or checkpointing), the issue's measure; median epoch samples/s uses each run's median epoch "
            "(no first-epoch warm-up, runs of different length compare fairly); samples per CPU-s divides by the "
            "process's CPU time instead of wall time (less sensitive to other jobs on the shared CPU).",
            "",
            summarize(runs, models),
            "",
            "<details><summary>Per seed</summary>",
            "",
            per_seed_table(runs),
            "",
            "</details>",
        ]
    )


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_ours"]:  # child process of an ``ours`` run
        config, out_dir = json.loads(Path(argv[1]).read_text()), Path(argv[2])
        (out_dir / "result.json").write_text(json.dumps(run_ours(config, out_dir), indent=2))
        return 0

    from assets.split import load_splits
    from llm4ctr.errors import Llm4ctrError
    from llm4ctr.params import load_params

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, help="default: params.yaml train.seeds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side (default 1)")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="FuxiCTR DataLoader worker processes (default 0: batches made in the training thread, as ours)",
    )
    parser.add_argument("--work", type=Path, default=WORK, help="run folders (reused when the config is unchanged)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to write the table into")
    parser.add_argument("--fuxictr-python", type=Path, default=FUXICTR_PYTHON)
    parser.add_argument("--fresh", action="store_true", help="ignore finished runs in --work")
    args = parser.parse_args(argv)
    try:
        params = load_params(ROOT / "params.yaml")
        if not args.fuxictr_python.exists():
            raise Llm4ctrError(f"{args.fuxictr_python}: FuxiCTR venv missing; create it with `make bench-fuxictr`")
        dataset = params.get_path("data.name")
        seeds = args.seeds or [int(s) for s in params.get_path("train.seeds")]
        splits = load_splits(ROOT, dataset)
        fields, expected_vocab = prepare_fuxictr_inputs(params, splits, args.work / "data")
    except Llm4ctrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = " ".join(["nice -n 5 .venv/bin/python bench/bench_fuxictr.py", *map(shlex.quote, argv)])
    test_labels = splits["test"]["label"].to_numpy(dtype=np.float64)
    base = {
        "dataset": dataset,
        "threads": args.threads,
        "num_workers": args.num_workers,
        "min_count": int(params.get_path("features.min_count")),
        "fields": fields,
        "data": {s: str(args.work / "data" / f"{s}.parquet") for s in splits},
    }
    hparams = {model: matched_config(params, model) for model in args.models}

    runs = []
    print(f"load before: {uptime()}", flush=True)
    for i, seed in enumerate(seeds):
        for model in args.models:
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                config = {**base, "model": model, "seed": seed, "hparams": hparams[model]}
                run_dir = args.work / "runs" / f"{model}-{seed}-{side}"
                result = None if args.fresh else cached(run_dir, config)
                if result is None:
                    result = run_child(side, config, run_dir, args.fuxictr_python)
                r = score(result, run_dir, test_labels)
                check_vocab(r, expected_vocab[side])
                runs.append(r)
                print(
                    f"{model:7s} seed {seed} {side:8s} AUC {r['test_auc']:.4f} LogLoss {r['test_logloss']:.4f} "
                    f"{r['samples_per_s']:8,.0f} samples/s  RSS {r['child_peak_rss_mb']:6,.0f} MB "
                    f"(anon {r['peak_anon_mb']:4,.0f})  "
                    f"epochs {r['epochs']}  ({r['wall_seconds']:.0f} s)",
                    flush=True,
                )

    info = {
        **base,
        "fuxictr_python": args.fuxictr_python,
        "seeds": seeds,
        "vocab_sizes": expected_vocab,
        "n_bins": params.get_path("features.n_bins"),
        "hparams": hparams,
        "rows": ", ".join(f"{s} {len(f):,}" for s, f in splits.items()),
    }
    print(f"load after: {uptime()}", flush=True)
    from llm4ctr.atomic import replace_block

    replace_block(args.results, "bench_fuxictr", report(runs, args.models, info, command))
    print("\n" + summarize(runs, args.models))
    print(f"\nwritten to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
