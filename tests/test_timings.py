"""Stage wall times: the record every run appends to, the budget the default profile is held to, and
the end-of-run summary that shows both the results and the times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm4ctr.errors import Llm4ctrError
from llm4ctr.params import load_params
from orchestration import timings
from orchestration.report import summary_table

ROOT = Path(__file__).resolve().parents[1]


def _default():
    return load_params(ROOT / "params.yaml")


def _published(params, seconds: float = 5.0, total: float = 900.0) -> dict:
    steps = {
        label: {"label": label, "seconds": seconds, "params_digest": digest}
        for label, digest in timings.default_instances(params).items()
    }
    steps[timings.TOTAL] = {"label": timings.TOTAL, "seconds": total, "params_digest": None}
    steps[timings.VENV] = {"label": timings.VENV, "seconds": 190.0, "params_digest": None}
    return {"steps": steps}


def test_the_published_fresh_run_covers_the_default_profile_within_budget():
    """The guard: every stage instance of params.yaml has a time measured under its current params,
    and the published `make run` (venv and downloads included) is within the headroom of 30 minutes."""
    published = json.loads((ROOT / timings.PUBLISHED).read_text(encoding="utf-8"))
    assert timings.budget_problems(published, _default()) == []
    assert published["steps"][timings.VENV]["seconds"] > 0  # the venv build was part of the measured run


def test_budget_problems_name_a_new_stage_a_changed_knob_and_an_overrun():
    params = _default()
    assert timings.budget_problems(_published(params), params) == []
    grown = load_params(ROOT / "params.yaml", {"ctr.models": [*params.get_path("ctr.models"), "newmodel"]})
    assert any(
        p.startswith("train@newmodel: no published time") for p in timings.budget_problems(_published(params), grown)
    )
    bigger = load_params(ROOT / "params.yaml", {"train.max_epochs": 99})
    problems = timings.budget_problems(_published(params), bigger)
    assert any(p.startswith("train@dcnv2: published time was measured under other params") for p in problems)
    assert not any(p.startswith("ingest") for p in problems)  # stages that do not read `train` keep their times
    over = timings.budget_problems(_published(params, total=1200), params)
    assert over == ["a fresh clone took 1390 s (venv + make run), over 75% of the 1800 s budget (1350 s)"]
    no_venv = _published(params)
    del no_venv["steps"][timings.VENV]
    assert timings.budget_problems(no_venv, params)[0].startswith("no 'venv' time")


def test_record_keeps_the_latest_entry_per_label_in_finishing_order(tmp_path):
    timings.record(tmp_path, "ds", "ingest", 3.0, "a")
    timings.record(tmp_path, "ds", "train@fm", 10.0, "b")
    timings.record(tmp_path, "ds", "ingest", 4.0, "c")
    entries = timings.latest(tmp_path, "ds")
    assert list(entries) == ["train@fm", "ingest"]
    assert entries["ingest"]["seconds"] == 4.0 and entries["ingest"]["params_digest"] == "c"
    table = timings.markdown(entries)
    assert "| train | 1 | 10 |  |" in table and "| all stages and fetch | | 14 | |" in table


def test_publish_refuses_a_record_that_does_not_cover_the_default_profile(tmp_path):
    params = _default()
    (tmp_path / "README.md").write_text("# x\n")
    timings.record(tmp_path, "ml-100k", "ingest", 3.0, params.digest(("data.name",)))
    with pytest.raises(Llm4ctrError, match="split: no published time"):
        timings.publish(tmp_path, params)
    assert not (tmp_path / timings.PUBLISHED).exists() and (tmp_path / "README.md").read_text() == "# x\n"


def test_publish_writes_the_json_and_the_readme_table(tmp_path):
    params = _default()
    (tmp_path / "README.md").write_text("# x\n\n<!-- BEGIN timings default -->\nold\n<!-- END timings default -->\n")
    for label, step in _published(params).get("steps").items():
        timings.record(tmp_path, "ml-100k", label, step["seconds"], step["params_digest"])
    path = timings.publish(tmp_path, params)
    published = json.loads(path.read_text())
    assert published["steps"]["make run"]["seconds"] == 900.0 and published["machine"]["cores"] >= 1
    readme = (tmp_path / "README.md").read_text()
    assert "old" not in readme and "| venv build (first run only) | | 190 | |" in readme
    assert "| **fresh clone: venv + make run** | | **1090** | |" in readme


def test_summary_ends_with_results_times_and_next_steps(tmp_path):
    params = load_params(ROOT / "params.yaml")
    for stage in ("ingest", "split", "evaluate"):
        (tmp_path / "artifacts" / stage / "ml-100k").mkdir(parents=True)
    (tmp_path / "artifacts/ingest/ml-100k/summary.json").write_text(
        json.dumps({"rows": 10, "users": 2, "items": 3, "positive_rate": 0.5, "per_scenario": {"a": 10}})
    )
    split = {
        "rows": 5,
        "users": 2,
        "items": 3,
        "positive_rate": 0.5,
        "share": 0.5,
        "cold_user_share": 0.0,
        "cold_item_share": 0.0,
    }
    (tmp_path / "artifacts/split/ml-100k/summary.json").write_text(
        json.dumps({"method": "random", "splits": {"train": split, "valid": split, "test": split}})
    )
    models = {
        "dcnv2": {"stage": "train", "auc": 0.78, "auc_std": 0.001, "logloss": 0.56, "relaimpr": 0.0, "seeds": 1},
        "dcnv2_learn": {"stage": "learn", "auc": 0.79, "auc_std": 0.0, "logloss": 0.55, "relaimpr": 0.0345, "seeds": 1},
    }
    (tmp_path / "artifacts/evaluate/ml-100k/results.json").write_text(
        json.dumps({"dataset": "ml-100k", "base_model": "dcnv2", "models": models})
    )
    timings.record(tmp_path, "ml-100k", "train@dcnv2", 12.0, "x")
    text = summary_table(tmp_path, params)
    results = text[text.index("Test results") :]
    assert results.index("dcnv2_learn") < results.index("dcnv2 ")  # best first
    assert "+3.45%" in results and "0.7900" in results
    assert "| train | 1 | 12 |  |" in text
    assert text.rstrip().splitlines()[-1].startswith("  make run PROFILE=full")
    assert "make ui" in text and "artifacts/drift/ml-100k/*.html" in text
