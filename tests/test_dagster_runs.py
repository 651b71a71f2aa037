"""How Dagster runs the assets: executor and threads from the environment, the named jobs, the
nightly schedule's run request."""

from __future__ import annotations

import pytest

from orchestration import runs


def test_multiprocess_steps_times_threads_never_exceed_the_cores(monkeypatch):
    monkeypatch.setattr(runs, "cores", lambda: 16)
    assert runs.concurrency({}) == ("multiprocess", 8, 2)
    assert runs.concurrency({"LLM4CTR_DAGSTER_MAX_CONCURRENT": "3"}) == ("multiprocess", 3, 5)
    assert runs.concurrency({"LLM4CTR_DAGSTER_MAX_CONCURRENT": "32"}) == ("multiprocess", 32, 1)
    assert runs.concurrency({"LLM4CTR_DAGSTER_EXECUTOR": "in_process"}) == ("in_process", 1, 16)
    monkeypatch.setattr(runs, "cores", lambda: 2)
    assert runs.concurrency({}) == ("multiprocess", 1, 2)  # this machine: one step with both cores
    executor = runs.executor({"LLM4CTR_DAGSTER_MAX_CONCURRENT": "2"})
    resolved = executor.config_schema.resolve_config({}).value["config"]
    assert executor.name == "multiprocess" and resolved["max_concurrent"] == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LLM4CTR_DAGSTER_EXECUTOR", "celery"), ("LLM4CTR_DAGSTER_MAX_CONCURRENT", "0"),
     ("LLM4CTR_DAGSTER_MAX_CONCURRENT", "many")],
)  # fmt: skip
def test_a_bad_setting_names_its_variable(variable, value):
    with pytest.raises(ValueError, match=f"{variable}: .*{value!r}"):
        runs.concurrency({variable: value})


def test_a_step_gets_its_share_of_threads(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(runs, "cores", lambda: 4)
    monkeypatch.setenv("LLM4CTR_DAGSTER_MAX_CONCURRENT", "2")
    try:
        runs.limit_threads()  # torch is loaded: its threads now
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "9")
    monkeypatch.delitem(runs.sys.modules, "torch")  # a fresh step process: the stage imports torch later
    runs.limit_threads()
    assert runs.os.environ["OMP_NUM_THREADS"] == runs.os.environ["MKL_NUM_THREADS"] == "2"


def test_retrain_job_is_the_served_model_and_what_publishes_it():
    from orchestration.definitions import defs

    retrain = defs.resolve_job_def("retrain").asset_layer.executable_asset_keys
    assert sorted(k.to_user_string() for k in retrain) == ["bento", "drift", "evaluate", "train/dcnv2"]
    pipeline = defs.resolve_job_def("pipeline").asset_layer.executable_asset_keys
    assert retrain < pipeline and len(pipeline) > 20


def test_nightly_schedule_requests_the_pipeline_on_the_params_dataset(tmp_path):
    import dagster as dg

    from orchestration.definitions import Project, defs

    (tmp_path / "params.yaml").write_text("data:\n  name: ml-1m\n")
    schedule = defs.get_schedule_def("nightly_pipeline")
    assert schedule.job_name == "pipeline" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    with dg.build_schedule_context(resources={"project": Project(root=str(tmp_path))}) as context:
        request = schedule(context)
    assert request.partition_key == "ml-1m"
