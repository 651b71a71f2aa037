"""A real PostgreSQL server for a test: initdb in a temporary folder, started on 127.0.0.1 at a free
port, stopped by the PID in its postmaster.pid. As root, the server runs as the ``postgres`` user
(PostgreSQL refuses root). `.ci/run` installs Debian's postgresql package when it is missing."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

USER = "llm4ctr"


def server_bin() -> Path:
    """The folder of initdb / pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql); .ci/run installs it")
    return Path(versions[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server(database: str = "dagster") -> Iterator[str]:
    """Yield the URL of ``database`` on a fresh server; the server and its folder go afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="llm4ctr-pg-"))
    data, port, bin_dir = folder / "data", _free_port(), server_bin()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    try:
        subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust"]), **run)
        start = ["-w", "start", "-o", f"-h 127.0.0.1 -p {port} -k {folder}"]
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), *start]), **run
        )
        url = f"postgresql://{USER}@127.0.0.1:{port}"
        subprocess.run([str(bin_dir / "psql"), f"{url}/postgres", "-q", "-c", f"CREATE DATABASE {database}"], **run)
        yield f"{url}/{database}"
    finally:
        pid_file = data / "postmaster.pid"
        if pid_file.is_file():
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            deadline = time.time() + 60
            while time.time() < deadline and _alive(pid):
                time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
