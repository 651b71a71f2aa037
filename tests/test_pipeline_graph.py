"""One DAG, two runners: dvc.yaml (as DVC itself reads it) and the Dagster graph must agree.

Both are derived from assets/registry.py; this test compares what the two tools actually build:
`dvc dag --dot` against the Dagster asset graph, node for node and edge for edge.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from assets.registry import STAGES
from orchestration import dvc_yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")


def test_committed_dvc_yaml_is_generated_from_the_registry():
    assert (ROOT / "dvc.yaml").read_text(encoding="utf-8") == dvc_yaml.render(), (
        "dvc.yaml is out of date: run `llm4ctr dvc-yaml`"
    )


def dvc_graph() -> tuple[set[str], set[tuple[str, str]]]:
    """Stage nodes and edges of DVC's own DAG, with Dagster-style names (train@fm -> train/fm)."""
    dot = subprocess.run([DVC, "dag", "--dot"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    name = lambda n: n.replace("@", "/")  # noqa: E731
    nodes = {name(n) for n in re.findall(r'^"([^"]+)";$', dot, re.M) if not n.endswith(".dvc")}
    edges = {(name(a), name(b)) for a, b in re.findall(r'^"([^"]+)" -> "([^"]+)"', dot, re.M) if not a.endswith(".dvc")}
    return nodes, edges


def dagster_graph() -> tuple[set[str], set[tuple[str, str]]]:
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    nodes = {k.to_user_string() for k in keys}
    edges = {(p.to_user_string(), k.to_user_string()) for k in keys for p in graph.get(k).parent_keys}
    return nodes, edges


def test_dvc_and_dagster_build_the_same_dag():
    dvc_nodes, dvc_edges = dvc_graph()
    dg_nodes, dg_edges = dagster_graph()
    assert dvc_nodes == dg_nodes
    assert dvc_edges == dg_edges
    assert {"ingest", "split", "features", "train/dcnv2", "evaluate"} <= dg_nodes
    assert ("split", "features") in dg_edges and ("train/dcnv2", "evaluate") in dg_edges


def test_gx_suites_are_blocking_checks_of_their_stages():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    gx = {c for c in checks if c[1].endswith("_gx_suite")}
    assert gx == {(s.name, f"{s.name}_gx_suite") for s in STAGES if s.check}
    assert {"ingest", "split"} <= {a for a, _ in gx}
    blocking = {spec.key.name for c in defs.asset_checks for spec in c.check_specs if spec.blocking}
    assert {name for _, name in gx} <= blocking


def test_every_registry_function_and_check_resolves():
    for stage in STAGES:
        assert callable(stage.resolve())
        if stage.check:
            assert callable(stage.resolve("check"))


def test_stage_outputs_live_under_artifacts_and_never_in_data():
    for stage in STAGES:
        for out in stage.outs:
            assert out.startswith(f"artifacts/{stage.name}/"), out


def test_the_dagster_graph_shows_the_active_profiles_variants():
    """`make ui PROFILE=full` sets $LLM4CTR_PROFILE: that profile's variants become assets."""
    import os

    code = (
        "from orchestration.definitions import defs; "
        "keys = [k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()]; "
        "print(sum(k.startswith('msr/') for k in keys))"
    )
    counts = {}
    for profile in ("default", "full"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parents[1],
            text=True,
            capture_output=True,
            env={**os.environ, "LLM4CTR_PROFILE": profile},
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        counts[profile] = int(out.stdout.split()[-1])
    assert counts == {"default": 3, "full": 18}


def test_an_asset_code_version_follows_its_stage_code_only(tmp_path: Path):
    """Dagster marks an asset stale when its code version changed: the digest of the stage's code deps."""
    import shutil

    from assets.registry import get_stage
    from orchestration.definitions import ROOT, code_version, defs

    ingest, train = get_stage("ingest"), get_stage("train")
    assert defs.get_assets_def("ingest").code_versions_by_key[dg_key("ingest")] == code_version(ingest)
    for rel in {*ingest.code, *train.code}:
        source = ROOT / rel
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        copy(source, tmp_path / rel)
    digest = code_version.__wrapped__  # uncached: the files change below
    before = digest(ingest, tmp_path), digest(train, tmp_path)
    assert before == (code_version(ingest), code_version(train))
    only_train = next(rel for rel in train.code if rel not in ingest.code and rel.endswith(".py"))
    (tmp_path / only_train).write_text((tmp_path / only_train).read_text() + "\n# changed\n")
    assert digest(ingest, tmp_path) == before[0] and digest(train, tmp_path) != before[1]


def dg_key(name: str):
    import dagster as dg

    return dg.AssetKey([name])


def test_the_stages_with_dvc_plots_are_the_ones_dagster_renders_the_plots_page_for():
    with_plots = {stage.name for stage in STAGES if dvc_yaml.has_plots(stage)}
    assert {"evaluate", "train", "clickprompt_pretrain"} <= with_plots
    assert not {"ingest", "split", "features", "bento", "drift"} & with_plots
