"""The Dagster instance on a real PostgreSQL server: the storage section `make dagster-home
DAGSTER_STORAGE=postgres` writes, a materialization through it, and its events read back from the
database by a second instance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.fixtures_postgres import postgres_server
from tests.test_pipeline_run import ROOT, make_project


def test_a_materialization_is_stored_in_postgres(tmp_path: Path, monkeypatch):
    import dagster as dg
    import psycopg2

    from orchestration.definitions import Project, defs

    project = make_project(ROOT, tmp_path / "project")
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_STORAGE": "postgres"}
    subprocess.run(["make", "-s", "dagster-home"], cwd=ROOT, env=env, check=True, capture_output=True)
    with postgres_server() as url:
        monkeypatch.setenv("LLM4CTR_DAGSTER_PG_URL", url.replace("postgresql://", "postgresql+psycopg2://"))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            result = dg.materialize(
                [defs.get_assets_def("ingest")],
                partition_key="ml-100k",
                resources={"project": Project(root=str(project))},
                instance=instance,
            )
            assert result.success
        with dg.DagsterInstance.from_config(str(home)) as again:  # a new process's view: the database
            event = again.get_latest_materialization_event(dg.AssetKey("ingest"))
            assert event is not None and event.run_id == result.run_id
            assert event.asset_materialization.partition == "ml-100k"
        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
            assert cursor.fetchone()[0] == 1
