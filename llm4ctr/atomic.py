"""Atomic outputs: a stage writes into a temporary sibling and only a finished result replaces the old one.

A failure (exception, kill) therefore never leaves half an output and never destroys the previous
good output. Temporary siblings start with ``.tmp-`` so they are easy to ignore and clean.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``target`` (a directory).

    The swap is two renames on the same filesystem: old -> backup, temp -> target; the backup is
    removed afterwards. On an exception the temporary directory is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
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
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(target, backup)
    os.replace(tmp, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is renamed onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
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
