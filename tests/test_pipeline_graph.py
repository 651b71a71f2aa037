"""One DAG, two runners: dvc.yaml and the Dagster graph must both equal the stage registry."""

from __future__ import annotations

from pathlib import Path

import yaml

from assets.registry import STAGES, upstream
from orchestration import dvc_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_is_generated_from_the_registry():
    assert (ROOT / "dvc.yaml").read_text(encoding="utf-8") == dvc_yaml.render(), (
        "dvc.yaml is out of date: run `llm4ctr dvc-yaml`"
    )


def test_dvc_stages_match_registry_stages_and_edges():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert list(doc) == [s.name for s in STAGES]
    outs_of = {name: [next(iter(o)) for o in st["outs"]] for name, st in doc.items()}
    for name, st in doc.items():
        assert st["cmd"] == f"llm4ctr stage {name}"
        dvc_upstream = sorted(
            other for other, outs in outs_of.items() if other != name and any(d in outs for d in st["deps"])
        )
        assert dvc_upstream == sorted(upstream(next(s for s in STAGES if s.name == name)))


def test_dagster_graph_matches_registry():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {s.name for s in STAGES}
    for stage in STAGES:
        node = graph.get(next(k for k in graph.get_all_asset_keys() if k.to_user_string() == stage.name))
        assert sorted(p.to_user_string() for p in node.parent_keys) == sorted(upstream(stage))
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == {(s.name, f"{s.name}_gx_suite") for s in STAGES if s.check}


def test_every_registry_function_and_check_resolves():
    for stage in STAGES:
        assert callable(stage.resolve())
        if stage.check:
            assert callable(stage.resolve("check"))


def test_stage_outputs_live_under_artifacts_and_never_in_data():
    for stage in STAGES:
        for out in stage.outs:
            assert out.startswith(f"artifacts/{stage.name}/"), out
