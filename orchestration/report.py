"""What `make run` prints at the end: the data, every scored variant, the stage times, and where to look next."""

from __future__ import annotations

from pathlib import Path

from assets.split import SPLITS
from assets.tables import read_json
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir
from orchestration import timings


def summary_table(root: Path, params: Params) -> str:
    """The data, the results (when the evaluate stage has run), the stage times and the next steps."""
    dataset = params.get_path("data.name")
    parts = [data_table(root, params)]
    if (artifact_dir(root, "evaluate", dataset) / "results.json").is_file():
        parts.append(results_table(root, dataset))
    entries = timings.latest(root, dataset)
    if entries:
        parts.append(
            f"Wall time per stage (artifacts/timings/{dataset}.jsonl, latest run of each):\n"
            + timings.markdown(entries)
        )
    parts.append(next_steps(root, params))
    return "\n\n".join(p.rstrip("\n") for p in parts)


def results_table(root: Path, dataset: str) -> str:
    """Every scored variant, best first: test AUC (± over seeds), LogLoss, RelaImpr over the base, seeds."""
    from assets.evaluate import read_results

    results = read_results(root, dataset)
    models = results["models"]
    header = f"{'variant':<28}{'stage':<14}{'AUC':>8}{'±':>8}{'LogLoss':>9}{'RelaImpr':>10}{'seeds':>6}"
    lines = [
        f"Test results, {dataset} (RelaImpr vs {results['base_model']}; all tables: "
        f"artifacts/evaluate/{dataset}/results.md)",
        header,
        "-" * len(header),
    ]
    for name, r in sorted(models.items(), key=lambda kv: -kv[1]["auc"]):
        relaimpr = "-" if r.get("relaimpr") is None else f"{r['relaimpr'] * 100:+.2f}%"
        lines.append(
            f"{name:<28}{r['stage']:<14}{r['auc']:>8.4f}{r['auc_std']:>8.4f}{r['logloss']:>9.4f}"
            f"{relaimpr:>10}{r['seeds']:>6}"
        )
    base = results["base_model"]
    for name, r in sorted(results.get("sampled", {}).items(), key=lambda kv: -kv[1]["auc"]):
        versus = "-" if r.get("base_auc") is None else f"{r['base_auc']:.4f}"
        lines.append(
            f"{name:<28}{r['stage']:<14}{r['auc']:>8.4f}{r['auc_std']:>8.4f}{r['logloss']:>9.4f}   on {r['rows']} test "
            f"rows of {r['users']} users ({base} there: {versus})"
        )
    return "\n".join(lines)


def next_steps(root: Path, params: Params) -> str:
    """Where a user goes after a run: the UI, the service, the reports and plots, the full tables."""
    dataset = params.get_path("data.name")
    drift = artifact_dir(Path("."), "drift", dataset)
    return "\n".join(
        [
            "Next (after `source .venv/bin/activate`, or through make):",
            "  make ui                      Dagster UI on http://127.0.0.1:3001: asset graph, GX checks, metadata",
            "  make serve                   the CTR service (BentoML) on http://127.0.0.1:3000",
            f"  {str(drift) + '/*.html':<28} Evidently drift reports per long-tail segment",
            "  artifacts/dvc_plots/index.html  DVC's plots: ROC, calibration, training curves (`dvc plots show`)",
            "  dvc metrics show             the evaluation figures",
            "  make run PROFILE=full        the published tables: 3 seeds, every variant (hours on CPU)",
        ]
    )


def data_table(root: Path, params: Params) -> str:
    """A plain-text table of the ingest and split summaries of the configured dataset."""
    dataset = params.get_path("data.name")
    ingest = read_json(artifact_dir(root, "ingest", dataset) / "summary.json")
    split = read_json(artifact_dir(root, "split", dataset) / "summary.json")
    header = (
        f"{'table':<10}{'rows':>9}{'users':>7}{'items':>7}{'pos.rate':>10}{'share':>7}"
        f"{'cold users':>12}{'cold items':>12}"
    )
    lines = [f"dataset {dataset}, split method {split['method']}", header, "-" * len(header)]
    lines.append(
        f"{'all':<10}{ingest['rows']:>9}{ingest['users']:>7}{ingest['items']:>7}{ingest['positive_rate']:>10.4f}"
    )
    for name in SPLITS:
        s = split["splits"][name]
        lines.append(
            f"{name:<10}{s['rows']:>9}{s['users']:>7}{s['items']:>7}{s['positive_rate']:>10.4f}"
            f"{s['share']:>7.3f}{s['cold_user_share']:>12.4f}{s['cold_item_share']:>12.4f}"
        )
    scen = ", ".join(f"{k}: {v}" for k, v in ingest["per_scenario"].items())
    lines.append(f"scenarios (all rows): {scen}")
    return "\n".join(lines)
