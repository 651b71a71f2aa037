"""The summary table `make run` prints at the end: what each finished stage produced."""

from __future__ import annotations

from pathlib import Path

from assets.split import SPLITS
from assets.tables import read_json
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir


def summary_table(root: Path, params: Params) -> str:
    """A plain-text table of the ingest and split summaries of the configured dataset."""
    dataset = params.get_path("data.name")
    ingest = read_json(artifact_dir(root, "ingest", dataset) / "summary.json")
    split = read_json(artifact_dir(root, "split", dataset) / "summary.json")
    header = f"{'table':<10}{'rows':>9}{'users':>7}{'items':>7}{'pos.rate':>10}{'share':>7}{'cold users':>12}{'cold items':>12}"
    lines = [f"dataset {dataset}, split method {split['method']}", header, "-" * len(header)]
    lines.append(f"{'all':<10}{ingest['rows']:>9}{ingest['users']:>7}{ingest['items']:>7}{ingest['positive_rate']:>10.4f}")
    for name in SPLITS:
        s = split["splits"][name]
        lines.append(
            f"{name:<10}{s['rows']:>9}{s['users']:>7}{s['items']:>7}{s['positive_rate']:>10.4f}"
            f"{s['share']:>7.3f}{s['cold_user_share']:>12.4f}{s['cold_item_share']:>12.4f}"
        )
    scen = ", ".join(f"{k}: {v}" for k, v in ingest["per_scenario"].items())
    lines.append(f"scenarios (all rows): {scen}")
    return "\n".join(lines)
