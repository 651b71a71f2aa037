"""The container files, checked without Docker (none on these machines): the compose services agree
with each other, with the workspace file and with the image; the containers' Dagster instance file
loads for real against a PostgreSQL server; `docker compose config` validates the file where Docker
is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.fixtures_postgres import postgres_server

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_dagster_services_share_one_instance_and_find_the_code_location():
    services = _compose()["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon"}
    dagster = [services[name] for name in ("code", "webserver", "daemon")]
    for service in dagster:
        assert service["image"] == "llm4ctr:latest"
        assert service["environment"]["DAGSTER_HOME"] == "/opt/dagster_home"
        assert "@postgres:5432/dagster" in service["environment"]["LLM4CTR_DAGSTER_PG_URL"]
        assert "./dagster.yaml:/opt/dagster_home/dagster.yaml:ro" in service["volumes"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["webserver"]["ports"] == ["127.0.0.1:3000:3000"]  # the UI on the host's loopback only
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    code = services["code"]["command"]
    assert workspace["host"] == "code" and str(workspace["port"]) == code[code.index("-p") + 1]
    assert code[code.index("-m") + 1] == "orchestration.definitions"
    for name in ("webserver", "daemon"):
        command = services[name]["command"]
        assert command[command.index("-w") + 1] == "/opt/llm4ctr/docker/workspace.yaml"


def test_the_image_installs_with_make_venv_and_leaves_runs_out_of_its_context():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "RUN make venv TORCH=${TORCH}" in dockerfile  # the lock and install path of every workstation
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "artifacts", "data", ".dvc/cache"} <= set(ignored)


def test_the_containers_instance_file_loads_against_postgres(tmp_path, monkeypatch):
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DOCKER / "dagster.yaml", home / "dagster.yaml")
    with postgres_server() as url:
        monkeypatch.setenv("LLM4CTR_DAGSTER_PG_URL", url.replace("postgresql://", "postgresql+psycopg2://"))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"


def test_docker_compose_accepts_the_file_where_docker_is_installed(monkeypatch):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        return  # no Compose on this machine: the structure is checked above
    monkeypatch.setenv("LLM4CTR_PG_PASSWORD", "x")
    for files in (["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]):
        args = [a for f in files for a in ("-f", str(DOCKER / f))]
        subprocess.run([docker, "compose", *args, "config", "-q"], check=True, capture_output=True)
