"""The prediction log: every served prediction (features, probability, model version, time), appended
as JSON lines that the drift stage reads.

Writing must never slow down or break serving, so the request path only hands a batch to a bounded
queue (``put_nowait``: constant time, never blocks); a daemon thread serializes and writes it. When
the queue is full (the disk cannot keep up) or a write fails (disk full, permissions), the records
are dropped and counted in :attr:`PredictionLog.stats`, and serving goes on.

Each process writes its own files, ``predictions-<host>-<pid>-<start>-<n>.jsonl``, rolled over at
``max_file_bytes``, so several workers never interleave lines. A line is
``{"time": unix seconds, "model_version": "name:version", "prob": p, "features": {field: value}}``.
Readers skip a line that does not parse (the unfinished last line of a file being written).
This module stays import-light (no bentoml, no torch): the drift stage and the Dagster sensor use it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from pydantic_core import to_json

log = logging.getLogger(__name__)

PATTERN = "predictions-*.jsonl"
_STOP = object()


class PredictionLog:
    """Asynchronous, append-only JSON-lines writer of served predictions into ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        max_pending: int = 10_000,
        max_file_bytes: int = 64 * 2**20,
        flush_seconds: float = 0.5,
    ):
        self.directory = Path(directory)
        self.max_file_bytes = max_file_bytes
        self.flush_seconds = flush_seconds
        self.written = self.dropped = self.errors = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._prefix = f"predictions-{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}"
        self._parts = 0
        self._file = None
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ request path
    def append(self, features: Sequence[Mapping], probs: Sequence[float], model_version: str) -> bool:
        """Queue one scored batch; returns False (and counts the records as dropped) when the queue is full."""
        try:
            self._queue.put_nowait((time.time(), model_version, features, probs))
            return True
        except queue.Full:
            self.dropped += len(features)
            return False

    @property
    def stats(self) -> dict[str, int]:
        """Records written, dropped (queue full or write failed), write errors, batches waiting."""
        return {
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
            "pending_batches": self._queue.qsize(),
        }

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer thread (waits at most ``timeout`` seconds)."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        dirty = False
        while True:
            try:
                item = self._queue.get(timeout=self.flush_seconds)
            except queue.Empty:
                if dirty:
                    dirty = not self._flush()
                continue
            if item is _STOP:
                self._flush()
                if self._file is not None:
                    self._file.close()
                return
            self._write(*item)
            dirty = True
            if self._queue.empty():  # idle: make the lines visible to readers now
                dirty = not self._flush()

    def _write(self, when: float, version: str, features: Sequence[Mapping], probs: Sequence[float]) -> None:
        try:
            lines = b"".join(
                to_json({"time": when, "model_version": version, "prob": float(p), "features": f}) + b"\n"
                for f, p in zip(features, probs)
            )  # pydantic-core's serializer: several times faster than json.dumps, so less GIL time
            handle = self._handle()
            handle.write(lines)
            self.written += len(features)
        except Exception as exc:  # noqa: BLE001 - the log must never take serving down
            self._failed(exc, len(features))

    def _flush(self) -> bool:
        try:
            if self._file is not None:
                self._file.flush()
            return True
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, 0)
            return False

    def _failed(self, exc: Exception, n: int) -> None:
        self.errors += 1
        self.dropped += n
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning(
                "prediction log %s: write failed (%d errors so far, %d records dropped): %s",
                self.directory,
                self.errors,
                self.dropped,
                exc,
            )
        if self._file is not None:  # reopen on the next write
            try:
                self._file.close()
            except Exception:  # noqa: BLE001
                pass
            self._file = None

    def _handle(self):
        if self._file is not None and self._file.tell() >= self.max_file_bytes:
            self._file.close()
            self._file = None
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._parts += 1
            path = self.directory / f"{self._prefix}-{self._parts}.jsonl"
            self._file = open(path, "ab")  # noqa: SIM115 - kept open across batches
        return self._file


# ---------------------------------------------------------------------- readers
def log_files(directory: str | Path) -> list[Path]:
    """The log files in ``directory`` (none when it does not exist), oldest name first."""
    directory = Path(directory)
    return sorted(directory.glob(PATTERN)) if directory.is_dir() else []


def read_log(directory: str | Path, last: int | None = None) -> pd.DataFrame:
    """All logged predictions as a frame: the feature columns, ``prob``, ``model_version``, ``time``,
    sorted by time; ``last`` keeps only the most recent rows. Unparsable lines are skipped."""
    rows = []
    for path in log_files(directory):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    rows.append(
                        {
                            **entry["features"],
                            "prob": float(entry["prob"]),
                            "model_version": str(entry["model_version"]),
                            "time": float(entry["time"]),
                        }
                    )
                except (ValueError, KeyError, TypeError):
                    continue
    frame = pd.DataFrame(rows, columns=None if rows else ["prob", "model_version", "time"])
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    return frame.tail(last).reset_index(drop=True) if last else frame


def log_sizes(directory: str | Path) -> dict[str, int]:
    """File name -> size in bytes: a cheap fingerprint of how far the log has grown."""
    return {p.name: p.stat().st_size for p in log_files(directory)}


def new_rows(directory: str | Path, seen: Mapping[str, int]) -> tuple[int, dict[str, int]]:
    """Lines appended since the sizes ``seen`` (from :func:`log_sizes`), and the current sizes.

    Reads only the appended bytes of each file, so polling a large log stays cheap.
    """
    sizes, count = {}, 0
    for path in log_files(directory):
        start = int(seen.get(path.name, 0))
        with open(path, "rb") as handle:
            handle.seek(start)
            chunk = handle.read()
        count += chunk.count(b"\n")
        sizes[path.name] = start + len(chunk)
    return count, sizes
