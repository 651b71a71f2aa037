"""Serving benchmark of the CTR-only path (GitHub issue 8): a real `bentoml serve` on 127.0.0.1.

    BENTOML_HOME=$PWD/bentoml_home python bench/bench_serving.py [--requests 2000] [--concurrency 32]

Needs the bento stage's registered model (``llm4ctr stage bento``). Starts the server itself (own
process group, stopped by PID at the end) unless ``--url`` points at a running one, then measures
on the test split's records of ``data.name`` (the same records for every figure):

1. single-record latency at concurrency 1: ``--requests`` sequential requests on one keep-alive
   connection, p50/p90/p99 (target p99 <= 10 ms);
2. throughput at concurrency ``--concurrency`` (32): that many keep-alive connections sending
   single-record requests for ``--seconds``; requests/s, errors (any non-200 or failed request),
   latency percentiles (target >= 1,000 req/s, zero errors);
3. one 1,000-record request, repeated ``--batch-repeats`` times: p50/p99 (target <= 50 ms);
4. offline, in this process: the same records through ``models.predictor.Predictor`` (encoding +
   model, no HTTP), and through ClickPrompt WITH the PLM (``bench/bench_clickprompt.py``'s model:
   the PA-MLM checkpoint when present, else the public PLM weights; the cost is the same), its
   texts pre-tokenized: the ratio shows what the with-PLM path would cost to serve;
5. with ``--drift-demo``: the whole monitoring loop on real traffic. The server scores the test
   split (100 records per request) and logs it; the drift stage compares that log with the training
   split (it must pass); then the server scores the test split again with the age mix of the
   long-tail-user x head-item segment changed (those rows' users all aged 18-24) and the drift
   stage runs again (that segment must drift, the others not). Writes artifacts/drift/<ds>/.

The client is a small asyncio HTTP/1.1 keep-alive client (no extra dependency); it shares the 2 CPU
cores with the server, as any load generator on this machine would. Results go to stdout and, between
markers, into docs/RESULTS_SERVING.md with the command, the machine and its load average.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm4ctr.atomic import replace_block  # noqa: E402
from llm4ctr.env import apply_defaults  # noqa: E402
from llm4ctr.params import Params, load_params, parse_override, set_path  # noqa: E402
from llm4ctr.paths import artifact_dir  # noqa: E402
from serving.launcher import bentoml_serve  # noqa: E402

RESULTS = ROOT / "docs" / "RESULTS_SERVING.md"
TARGETS = {"p99_ms": 10.0, "req_per_s": 1000.0, "batch_ms": 50.0}


# ---------------------------------------------------------------------- server
@contextmanager
def server(url: str | None, env: dict[str, str], log_path: Path):
    """Yield (host, port, cpu_seconds): the given URL's (CPU unknown: None), or a fresh `bentoml serve`
    (serving/launcher.py, stopped by PID) with a function giving its CPU time so far."""
    if url:
        host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
        yield host, int(port or 80), lambda: None
        return
    with bentoml_serve(env, log_path) as running:
        yield "127.0.0.1", running.port, running.cpu_seconds


def measured(cpu_seconds, requests: int, run):
    """``run()``'s result, plus the server CPU milliseconds per request it cost (when known)."""
    before = cpu_seconds()
    result = run()
    after = cpu_seconds()
    cpu = None if before is None else round((after - before) * 1000 / requests, 3)
    return result, cpu


# ---------------------------------------------------------------------- client
def request_bytes(host: str, port: int, body: bytes) -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> tuple[int, bytes]:
    """One request/response on a keep-alive connection (Content-Length framed responses)."""
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


async def _sequential(host: str, port: int, payloads: list[bytes]) -> tuple[list[float], list[bytes], int]:
    reader, writer = await asyncio.open_connection(host, port)
    times, bodies, errors = [], [], 0
    for payload in payloads:
        started = time.perf_counter()
        status, body = await _exchange(reader, writer, payload)
        times.append(time.perf_counter() - started)
        bodies.append(body)
        errors += status != 200
    writer.close()
    return times, bodies, errors


async def _concurrent(host: str, port: int, payloads: list[bytes], concurrency: int, seconds: float) -> dict:
    """``concurrency`` connections, each sending requests back to back for ``seconds``."""
    times, counts = [], {"ok": 0, "errors": 0}
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = k
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                status, _ = await _exchange(reader, writer, payloads[i % len(payloads)])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                counts["errors"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            times.append(time.perf_counter() - started)
            counts["ok" if status == 200 else "errors"] += 1
            i += concurrency
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "requests": counts["ok"] + counts["errors"],
        "errors": counts["errors"],
        "seconds": wall,
        "req_per_s": (counts["ok"] + counts["errors"]) / wall,
        **percentiles(times),
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def time_calls(fn, repeats: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return percentiles(times)


# ---------------------------------------------------------------------- offline
def offline_figures(params, root: Path, records: list[dict], predictor, repeats: int, cp_repeats: int) -> dict:
    """Predictor (CTR-only, no HTTP) and ClickPrompt with PLM on the same records, in this process."""
    import torch

    out = {
        "ctr_only": {
            "single": time_calls(lambda: predictor.predict_records(records[:1]), repeats),
            "batch_1000": time_calls(lambda: predictor.predict_records(records[:1000]), 20),
        }
    }
    try:
        out["clickprompt_with_plm"] = clickprompt_figures(params, root, cp_repeats)
    except Exception as exc:  # noqa: BLE001 - the bench reports what it could not measure
        out["clickprompt_with_plm"] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    out["torch_threads"] = torch.get_num_threads()
    return out


def clickprompt_figures(params, root: Path, repeats: int) -> dict:
    """Single-record and 1,000-record forward latency of ClickPrompt with the PLM on test rows 0..999."""
    import torch
    from transformers import AutoTokenizer

    from assets.clickprompt import text_arrays, texts
    from assets.features import load_encoded
    from assets.pretrained import resolve
    from bench.bench_clickprompt import build

    dataset = params.get_path("data.name")
    encoder, arrays = load_encoded(root, dataset)
    models, sources = build(params, encoder)
    model = models["clickprompt_with_plm"].eval()
    source = sources["clickprompt_with_plm"]
    tokenizer = AutoTokenizer.from_pretrained(
        source + "/plm" if Path(source, "plm").is_dir() else resolve(params.get_path("plm.name"))
    )
    data = text_arrays(
        arrays["test"],
        texts(root, dataset)["test"],
        np.arange(1000),
        tokenizer,
        int(params.get_path("clickprompt.max_length")),
    )
    batch = {k: torch.as_tensor(v) for k, v in data.items() if k != "label"}
    rows = iter(range(10**9))

    def single() -> None:
        i = next(rows) % 1000
        model({k: v[i : i + 1] for k, v in batch.items()})

    with torch.inference_mode():
        return {
            "source": source,
            "single": time_calls(single, repeats),
            "batch_1000": time_calls(lambda: model(batch), 1, warmup=0),
        }  # minutes on 2 CPU cores


# ---------------------------------------------------------------------- report
def with_overrides(params, overrides: dict):
    """A copy of ``params`` with dotted-key ``overrides`` applied."""
    copied = Params(copy.deepcopy(dict(params)))
    copied.source = params.source
    for key, value in overrides.items():
        set_path(copied, key, value)
    return copied


def drift_demo(host: str, port: int, params, root: Path, test: pd.DataFrame, fields: list[str], log_root: Path) -> str:
    """Serve unshifted then age-shifted test traffic; run the drift stage on each; a markdown summary."""
    from assets.drift import run as run_drift
    from assets.split import load_splits
    from models.metrics import longtail_mask

    train = load_splits(root, params.get_path("data.name"))["train"]
    share = float(params.get_path("evaluate.longtail_share"))
    segment = longtail_mask(train["user_id"].value_counts(), test["user_id"], share) & ~longtail_mask(
        train["item_id"].value_counts(), test["item_id"], share
    )
    shifted = test.copy()
    shifted.loc[segment, "age"] = np.random.default_rng(0).integers(18, 25, int(segment.sum()))
    shifted["scenario"] = np.where(shifted["age"] < 25, "age<25", np.where(shifted["age"] < 35, "age25-34", "age>=35"))
    overrides = {"serve.log_dir": str(log_root), "drift.max_current_rows": len(test)}
    lines = []
    for name, frame in (("test split as served", test), ("age-shifted lt_user&head_item", shifted)):
        records = [{k: r[k] for k in fields} for r in json.loads(frame.to_json(orient="records"))]
        payloads = [
            request_bytes(host, port, json.dumps({"records": records[i : i + 100]}).encode())
            for i in range(0, len(records), 100)
        ]
        _, _, errors = asyncio.run(_sequential(host, port, payloads))
        time.sleep(1.0)  # the log writer flushes within 0.5 s
        started = time.perf_counter()
        summary = run_drift(with_overrides(params, overrides), root)
        lines += [
            f"**{name}** ({len(records)} records served, {errors} errors; drift stage "
            f"{time.perf_counter() - started:.0f} s, source `{summary['source']}`, drifted segments: "
            f"{', '.join(summary['drifted_segments']) or 'none'}):",
            "",
            summary["segments_md"],
            "",
        ]
    return "\n".join(lines)


def report(args, meta: dict, served: dict, offline: dict) -> str:
    single, conc, batch = served["single"], served["concurrent"], served["batch_1000"]
    cp, ctr = offline["clickprompt_with_plm"], offline["ctr_only"]

    def ok(good: bool) -> str:
        return "yes" if good else "**no**"

    def cpu(figures: dict) -> str:
        ms = figures.get("server_cpu_ms_per_request")
        return "-" if ms is None else f"{ms:.2f} ms"

    lines = [
        f"Command: `{' '.join(['python', 'bench/bench_serving.py', *sys.argv[1:]])}`  ",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), load average before the run "
        f"{served['load_before']}, after {served['load_after']}: the cores were shared with other jobs. "
        f"Server: one `bentoml serve` ({meta['serve']['workers']} worker, "
        f"{meta['serve']['torch_threads']} torch thread), "
        f"client on the same machine. Model `{meta['model_version']}` ({meta['variant']}, {meta['dataset']}).",
        "",
        "| measurement | result | server CPU per request | target | met |",
        "|---|---|---|---|---|",
        f"| single record, concurrency 1 ({args.requests} requests) | p50 {single['p50_ms']:.2f} ms, p90 "
        f"{single['p90_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms | {cpu(single)} | p99 <= 10 ms | "
        f"{ok(single['p99_ms'] <= TARGETS['p99_ms'])} |",
        f"| throughput, concurrency {args.concurrency} ({conc['requests']} single-record requests in "
        f"{conc['seconds']:.1f} s) | {conc['req_per_s']:,.0f} req/s, {conc['errors']} errors, "
        f"p50 {conc['p50_ms']:.1f} ms, "
        f"p99 {conc['p99_ms']:.1f} ms | {cpu(conc)} | >= 1,000 req/s, 0 errors | "
        f"{ok(conc['req_per_s'] >= TARGETS['req_per_s'] and conc['errors'] == 0)} |",
        f"| one 1,000-record request ({args.batch_repeats} times) | p50 {batch['p50_ms']:.1f} ms, p99 "
        f"{batch['p99_ms']:.1f} ms | {cpu(batch)} | <= 50 ms | {ok(batch['p99_ms'] <= TARGETS['batch_ms'])} |",
        "",
        "Server CPU per request is the CPU time the server processes used, divided by the requests: it is what",
        "the server costs whatever else runs on the machine (1,000 / that figure = requests/s one free core sustains).",
        "",
        "Offline, same records, in one process (no HTTP):",
        "",
        "| path | 1 record p50 | 1 record p99 | 1,000 records |",
        "|---|---|---|---|",
        f"| CTR-only (`Predictor.predict_records`: encoding + {meta['variant']}) | {ctr['single']['p50_ms']:.3f} ms | "
        f"{ctr['single']['p99_ms']:.3f} ms | {ctr['batch_1000']['p50_ms']:.1f} ms |",
    ]
    if "single" in cp:
        lines += [
            f"| ClickPrompt with PLM (model forward, texts pre-tokenized) | {cp['single']['p50_ms']:.1f} ms | "
            f"{cp['single']['p99_ms']:.1f} ms | {cp['batch_1000']['p50_ms'] / 1000:,.1f} s |",
            "",
            f"With-PLM / CTR-only: one record {cp['single']['p50_ms'] / ctr['single']['p50_ms']:,.0f}x offline "
            f"({cp['single']['p50_ms'] / single['p50_ms']:.1f}x the served end-to-end p50); 1,000 records "
            f"{cp['batch_1000']['p50_ms'] / ctr['batch_1000']['p50_ms']:,.0f}x. ClickPrompt model: `{cp['source']}`.",
        ]
    else:
        lines += ["", f"ClickPrompt with PLM: not measured ({cp['unavailable']})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--root", default=str(ROOT), help="project root holding artifacts/ (default: this checkout)")
    parser.add_argument("-S", "--set", action="append", default=[], help="params override key=value")
    parser.add_argument("--url", help="benchmark a running server (http://127.0.0.1:3000) instead of starting one")
    parser.add_argument("--requests", type=int, default=2000, help="sequential single-record requests")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the concurrent phase")
    parser.add_argument("--batch-repeats", type=int, default=50)
    parser.add_argument("--clickprompt-repeats", type=int, default=100)
    parser.add_argument("--drift-demo", action="store_true", help="also run the served-traffic drift demo (5.)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/RESULTS_SERVING.md alone")
    args = parser.parse_args()
    apply_defaults()
    params = load_params(args.params, dict(parse_override(s) for s in args.set))
    dataset = params.get_path("data.name")
    root = Path(args.root)
    log_root = Path(tempfile.mkdtemp(prefix="llm4ctr-bench-log-"))
    env = {
        **os.environ,
        "BENTOML_HOME": os.environ.get("BENTOML_HOME") or str(root / "bentoml_home"),
        "LLM4CTR_SERVE_LOG_DIR": str(log_root),
    }
    test = pd.read_parquet(artifact_dir(root, "split", dataset) / "test.parquet")
    records = json.loads(test.to_json(orient="records"))
    registration = json.loads((artifact_dir(root, "bento", dataset) / "registration.json").read_text())
    fields = [f["name"] for f in registration["fields"]]
    records = [{k: r[k] for k in fields} for r in records]

    served = {"load_before": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    with server(args.url, env, Path("/tmp/llm4ctr-bench-serve.log")) as (host, port, cpu_seconds):
        conn = http.client.HTTPConnection(host, port)
        conn.request("POST", "/metadata", b"{}", {"Content-Type": "application/json"})
        meta = json.loads(conn.getresponse().read())
        singles = [request_bytes(host, port, json.dumps({"records": [r]}).encode()) for r in records]
        batch = request_bytes(host, port, json.dumps({"records": records[:1000]}).encode())
        asyncio.run(_sequential(host, port, singles[:300]))  # warm-up (and the batching optimizer's first samples)
        sequence = (singles * (args.requests // len(singles) + 1))[: args.requests]
        (times, _, errors), cpu = measured(
            cpu_seconds, args.requests, lambda: asyncio.run(_sequential(host, port, sequence))
        )
        served["single"] = {**percentiles(times), "errors": errors, "server_cpu_ms_per_request": cpu}
        before = cpu_seconds()
        served["concurrent"] = asyncio.run(_concurrent(host, port, singles, args.concurrency, args.seconds))
        served["concurrent"]["server_cpu_ms_per_request"] = (
            None if before is None else round((cpu_seconds() - before) * 1000 / served["concurrent"]["requests"], 3)
        )
        (times, bodies, errors), cpu = measured(
            cpu_seconds, args.batch_repeats, lambda: asyncio.run(_sequential(host, port, [batch] * args.batch_repeats))
        )
        served["batch_1000"] = {**percentiles(times), "errors": errors, "server_cpu_ms_per_request": cpu}
        served_probs = np.array([row["probability"] for row in json.loads(bodies[-1])])
        demo = drift_demo(host, port, params, root, test, fields, log_root) if args.drift_demo and not args.url else ""
    served["load_after"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    import torch

    from models.predictor import Predictor

    torch.set_num_threads(int(meta["serve"]["torch_threads"]))
    predictor = Predictor.load(artifact_dir(root, "bento", dataset) / "model")
    offline_probs = predictor.predict_records(records[:1000])
    served["max_abs_diff_vs_offline"] = float(np.abs(served_probs - offline_probs).max())
    offline = offline_figures(params, root, records, predictor, args.requests, args.clickprompt_repeats)
    text = report(args, meta, served, offline)
    text += (
        f"\nServed vs offline probabilities for the 1,000 records: max |difference| "
        f"{served['max_abs_diff_vs_offline']:.2e}.\n"
    )
    if demo:
        text += "\nDrift monitoring on served traffic (`--drift-demo`):\n\n" + demo
    print(text)
    figures = {"served": served, "offline": offline}
    print(json.dumps(figures, indent=2))
    if not args.no_write:
        replace_block(RESULTS, "bench_serving", f"{text}\n```json\n{json.dumps(figures, indent=2)}\n```")


if __name__ == "__main__":
    main()
