"""Start a real `bentoml serve` on 127.0.0.1 for tests and benchmarks, and always stop it by PID.

The server runs in its own session (process group), so it cannot be hit by the caller's signals and
can be stopped as a group. BentoML's workers run in process groups of their own: stopping sends
SIGTERM to the server's group (its arbiter then stops the workers), and if anything is still alive
after ``grace`` seconds, SIGKILL to the group and to every worker PID recorded while it ran.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil  # a bentoml dependency

ROOT = Path(__file__).resolve().parents[1]
TARGET = "serving.service:CTRService"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ready(port: int, host: str = "127.0.0.1") -> bool:
    """True when the server answers /readyz with 200."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class Server:
    """A running server: its port and the PID of the `bentoml serve` process."""

    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and its workers."""
        total = 0.0
        try:
            root = psutil.Process(self.pid)
            for process in (root, *root.children(recursive=True)):
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
        return total


@contextmanager
def bentoml_serve(
    env: dict[str, str], log_path: Path, target: str = TARGET, timeout: float = 180, grace: float = 20, cwd: Path = ROOT
) -> Iterator[Server]:
    """Run `bentoml serve target` (a module:Class or a bento tag) on 127.0.0.1:<free port> with ``env``
    in ``cwd``; yield it once ready."""
    port = free_port()
    bentoml = str(Path(sys.executable).parent / "bentoml")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [bentoml, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    workers: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + timeout
        while not ready(port):
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bentoml serve not ready after {timeout:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.25)
        workers.update(_descendants(proc.pid))
        yield Server(port, proc.pid)
    finally:
        workers.update(_descendants(proc.pid))
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for worker in workers.values():  # a worker that outlived its arbiter (psutil checks it is the same process)
            try:
                if worker.is_running():
                    worker.kill()
            except psutil.NoSuchProcess:
                pass


def _descendants(pid: int) -> dict[int, psutil.Process]:
    try:
        return {child.pid: child for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.is_file() else ""
