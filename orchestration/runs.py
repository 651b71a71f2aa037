"""How Dagster runs the assets: the executor, the named jobs and the nightly schedule.

* **Executor** (``$LLM4CTR_DAGSTER_EXECUTOR``): ``multiprocess`` (default) runs up to
  ``$LLM4CTR_DAGSTER_MAX_CONCURRENT`` steps at once (default: half the cores, at least one), each step a
  process whose torch uses ``cores // max_concurrent`` threads, so steps x threads never exceed the
  cores (Dagster's own default, a step per core with torch's default threads each, oversubscribes the
  CPU ten times over when ten zoo models train together); ``in_process`` runs every step in the run's
  process, one after another, with every core.
* **Jobs**: ``pipeline`` (every asset) and ``retrain`` (the served model's stage instance, ``serve.stage``
  @ ``serve.variant``, then evaluate, the BentoML registration and drift; the other methods that read
  the served model, such as PALR ranking with it, keep their outputs until the pipeline runs).
* **Schedule** ``nightly_pipeline`` (stopped until turned on in the UI or with `dagster schedule start`):
  the pipeline job at 03:00 on params.yaml's dataset.

Executors for several machines (Kubernetes, Docker, Celery): docs/TEAM.md.
"""

from __future__ import annotations

import os
import sys

import dagster as dg

from llm4ctr.env import cores

EXECUTORS = ("multiprocess", "in_process")


def concurrency(env: dict[str, str] | None = None) -> tuple[str, int, int]:
    """(executor, steps at once, torch threads per step) from the environment; ValueError naming the
    variable with a bad value."""
    env = os.environ if env is None else env
    kind = env.get("LLM4CTR_DAGSTER_EXECUTOR", "multiprocess")
    if kind not in EXECUTORS:
        raise ValueError(f"LLM4CTR_DAGSTER_EXECUTOR: expected one of {EXECUTORS}, got {kind!r}")
    if kind == "in_process":
        return kind, 1, cores()
    raw = env.get("LLM4CTR_DAGSTER_MAX_CONCURRENT", str(max(1, cores() // 2)))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"LLM4CTR_DAGSTER_MAX_CONCURRENT: expected a positive integer, got {raw!r}")
    steps = int(raw)
    return kind, steps, max(1, cores() // steps)


def executor(env: dict[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor :func:`concurrency` describes."""
    kind, steps, _ = concurrency(env)
    if kind == "in_process":
        return dg.in_process_executor
    return dg.multiprocess_executor.configured({"max_concurrent": steps})


def limit_threads() -> None:
    """Give this step its share of the cores: torch's intra-op threads, set now when torch is loaded,
    else through the variables torch reads when the stage imports it."""
    threads = concurrency()[2]
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def jobs(served: dg.AssetKey) -> list[dg.UnresolvedAssetJobDefinition]:
    """``pipeline`` (every asset) and ``retrain`` (``served``, evaluate, bento, drift)."""
    return [
        dg.define_asset_job("pipeline", selection=dg.AssetSelection.all(), description="every stage"),
        dg.define_asset_job(
            "retrain",
            selection=dg.AssetSelection.assets(served, *(dg.AssetKey(n) for n in ("evaluate", "bento", "drift"))),
            description="the served model's stage, then evaluate, the BentoML registration and drift",
        ),
    ]


def nightly_schedule(dataset_of) -> dg.ScheduleDefinition:
    """The pipeline job at 03:00 on ``dataset_of(project)`` (params.yaml's dataset); stopped by default."""

    @dg.schedule(
        name="nightly_pipeline",
        job_name="pipeline",
        cron_schedule="0 3 * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def _schedule(context: dg.ScheduleEvaluationContext, project: dg.ConfigurableResource):
        dataset = dataset_of(project)
        return dg.RunRequest(partition_key=dataset, tags={"trigger": "nightly_pipeline"})

    return _schedule
