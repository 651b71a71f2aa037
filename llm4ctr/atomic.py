"""Atomic outputs: a stage writes into a temporary sibling and only a finished result replaces the old one.

A failure (exception, kill) therefore never leaves half an output and never destroys the previous
good output. Temporary siblings start with ``.tmp-`` so they are easy to ignore and clean.

While a target is written its writer holds an exclusive ``flock`` on the lock file ``.lock-<name>``
beside it, which names the writer (pid, host, start time, command line). A second writer of the same
stage output (``atomic_dir``) is refused at once with :class:`~llm4ctr.errors.OutputLocked`, so two
concurrent runs of one stage cannot both "succeed"; writers of one file (``atomic_file``) wait their
turn instead: file writes are short, and shared caches (the hidden-states manifest) have several
writers. The kernel drops a flock when its holder dies, so a killed run never leaves a stale lock;
the lock file is removed on release, and one left by a killed run is simply reused.

Holding the lock, a writer first clears what killed writers of the same target left: temporaries
``.tmp-<name>-<random>`` and ``atomic_dir`` backups ``.tmp-old-<name>-<pid>``. When the target is
missing (a kill between the two renames of the swap) the newest backup, the last good output, is put
back first. The random part and the pid contain no ``-``, which keeps the leftovers of ``a`` apart
from those of a sibling ``a-b``; only a sibling named ``old-<name>`` would be confused with them.

``.gitignore`` and ``.dvcignore`` ignore ``.tmp-*`` and ``.lock-*``, so neither git nor DVC sees
these names inside a folder it tracks: ``data/``, or ``artifacts/train/<ds>/``, which holds one
output per model and is itself a dependency of ``evaluate``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from llm4ctr.errors import OutputLocked

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _writing(target: Path, wait: bool) -> Iterator[None]:
    """Hold ``target``'s write lock (waiting for it when ``wait``, else raising ``OutputLocked``) and
    clear what killed writers of ``target`` left; the lock file is removed on release."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".lock-{target.name}"
    fd = _acquire(lock, target, wait)
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": shlex.join(sys.argv),
            "since": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _clear_leftovers(target)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still holding the flock: see _acquire
        os.close(fd)


def _acquire(lock: Path, target: Path, wait: bool) -> int:
    """An open descriptor of ``lock`` holding its exclusive flock.

    A waiter can get the flock on a file its previous holder has just removed; it then retries on
    the file now at ``lock``, so two writers never hold locks on different files of the same name.
    """
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputLocked(
                f"{target}: being written by another run, {holder}; wait for it to finish or stop it"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                return fd
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as its lock file says (a holder that has just started may not have said)."""
    try:
        info = json.loads(os.pread(fd, 1 << 16, 0))
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not named itself yet"


def _clear_leftovers(target: Path) -> None:
    """Remove what killed writers of ``target`` left, first putting the newest backup back when
    ``target`` is missing. Only the lock holder calls this, so nothing found is still being written."""
    name = re.escape(target.name)
    temp, backup = re.compile(rf"\.tmp-{name}-[a-z0-9_]+"), re.compile(rf"\.tmp-old-{name}-\d+")
    leftovers = [p for p in target.parent.iterdir() if temp.fullmatch(p.name) or backup.fullmatch(p.name)]
    backups = [p for p in leftovers if backup.fullmatch(p.name)]
    if backups and not target.exists():
        restored = max(backups, key=lambda p: p.stat().st_mtime)
        os.replace(restored, target)
        leftovers.remove(restored)
        log.warning("%s was missing (a run was killed while replacing it); restored it from %s", target, restored.name)
    for path in leftovers:
        log.info("removing %s, left by a killed run", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``target`` (a directory).

    The swap is two renames on the same filesystem: old -> backup, temp -> target; the backup is
    removed afterwards. On an exception the temporary directory is removed and ``target`` is untouched.
    Another process writing ``target`` meanwhile makes this raise ``OutputLocked`` at once.

    Under torchrun only rank 0 publishes a stage's output: the other ranks (``RANK`` > 0) run the same
    stage code and get a throwaway folder outside the project, dropped on exit.
    """
    target = Path(target)
    if int(os.environ.get("RANK", "0")) > 0:
        with tempfile.TemporaryDirectory(prefix=f"llm4ctr-rank{os.environ['RANK']}-{target.name}-") as dropped:
            yield Path(dropped)
        return
    with _writing(target, wait=False):
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like any other folder
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        backup = None
        if target.exists():
            backup = target.parent / f".tmp-old-{target.name}-{os.getpid()}"
            os.replace(target, backup)
        os.replace(tmp, target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is renamed onto ``target``.

    Writers of the same file in other processes wait for each other; the last one wins.
    """
    target = Path(target)
    with _writing(target, wait=True):
        fd, name = tempfile.mkstemp(prefix=f".tmp-{target.name}-", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any other file
        try:
            yield tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``target``."""
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def replace_block(path: str | Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in the markdown file
    ``path`` with ``body`` (appending the marked block when absent, creating the file when missing).

    Generated figures (evaluation tables, bench results) live in such blocks inside hand-written docs;
    the rest of the file is kept byte for byte. The write is atomic.
    """
    path = Path(path)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{begin}\n{body.rstrip(chr(10))}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + block + "\n"
    write_text(path, text)


def save_tensors(tensors: dict, target: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Atomically write ``tensors`` (name -> torch tensor) as a safetensors file.

    safetensors creates its files with mode 0600; the result gets the permissions any other output
    has (0666 minus the umask), so artifacts stay readable by the service user, containers and CI.
    """
    from safetensors.torch import save_file

    with atomic_file(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.chmod(0o666 & ~_umask())
