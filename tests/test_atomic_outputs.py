"""Atomic outputs: marked markdown blocks (evaluate stage, bench scripts), safetensors files, and
writers that are killed or run concurrently (real second processes hold the write lock)."""

import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm4ctr.atomic import atomic_dir, replace_block, write_text
from llm4ctr.errors import OutputLocked

ROOT = Path(__file__).resolve().parents[1]


def test_appends_then_replaces_only_its_own_block(tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n\nhand-written intro\n")
    replace_block(doc, "bench a", "| x |\n|---|\n| 1 |\n")
    replace_block(doc, "bench b", "b1")
    assert doc.read_text() == (
        "# Results\n\nhand-written intro\n\n<!-- BEGIN bench a -->\n| x |\n|---|\n| 1 |\n"
        "<!-- END bench a -->\n\n<!-- BEGIN bench b -->\nb1\n<!-- END bench b -->\n"
    )
    doc.write_text(doc.read_text().replace("hand-written intro", "edited by hand"))
    replace_block(doc, "bench a", "| x |\n|---|\n| 2 |")
    text = doc.read_text()
    assert "edited by hand" in text and "| 2 |" in text and "| 1 |" not in text
    assert text.count("BEGIN bench a") == 1 and text.endswith("<!-- BEGIN bench b -->\nb1\n<!-- END bench b -->\n")


def test_creates_a_missing_file(tmp_path):
    doc = tmp_path / "docs" / "NEW.md"
    replace_block(doc, "x", "body\n")
    assert doc.read_text() == "<!-- BEGIN x -->\nbody\n<!-- END x -->\n"


def test_saved_tensors_get_the_usual_file_mode(tmp_path):
    """safetensors itself creates 0600 files; artifacts must be readable like any other output."""
    import os

    import torch

    from llm4ctr.atomic import save_tensors

    old = os.umask(0o022)
    try:
        save_tensors({"a": torch.zeros(2)}, tmp_path / "x.safetensors", metadata={"k": "v"})
    finally:
        os.umask(old)
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


HOLDER = """
import sys, time
from pathlib import Path
from llm4ctr.atomic import atomic_dir, atomic_file
target, ready, kind, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
with (atomic_dir if kind == "dir" else atomic_file)(target) as tmp:
    (tmp / "half").write_text("half") if kind == "dir" else tmp.write_text("first")
    ready.touch()
    time.sleep(seconds)
"""


def _hold(target: Path, kind: str = "dir", seconds: float = 60.0) -> subprocess.Popen:
    """A second process inside atomic_dir/atomic_file(target), returned once it holds the lock.

    Its command line (sys.argv) is ``-c <target> <ready> <kind> <seconds>``, with ``ready`` beside
    ``target``'s folder.
    """
    ready = target.parent.parent / "ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target), str(ready), kind, str(seconds)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.02)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_killed_writers_leftovers_are_removed_by_the_next_run(tmp_path):
    target = tmp_path / "train" / "dcnv2"
    _kill(_hold(target))
    left = sorted(p.name for p in target.parent.iterdir())
    assert len(left) == 2 and left[0] == ".lock-dcnv2" and left[1].startswith(".tmp-dcnv2-")
    other = target.parent / ".tmp-dcnv2-b-abcdefgh"  # target 'dcnv2-b' being written: not ours to remove
    other.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "done").write_text("ok")
    assert sorted(p.name for p in target.parent.iterdir()) == [".tmp-dcnv2-b-abcdefgh", "dcnv2"]
    assert (target / "done").read_text() == "ok"


def test_a_swap_killed_between_its_renames_gets_the_last_good_output_back(tmp_path):
    target = tmp_path / "split" / "ml-100k"
    backup = target.parent / ".tmp-old-ml-100k-4242"
    backup.mkdir(parents=True)
    (backup / "good").write_text("last good")
    (target.parent / ".tmp-ml-100k-abcdefgh").mkdir()  # the killed run's unswapped new output
    with pytest.raises(RuntimeError, match="this run fails too"), atomic_dir(target):
        assert (target / "good").read_text() == "last good"  # put back before the new write starts
        raise RuntimeError("this run fails too")
    assert [p.name for p in target.parent.iterdir()] == ["ml-100k"]
    assert (target / "good").read_text() == "last good"


def test_a_concurrent_writer_is_refused_at_once_until_the_holder_dies(tmp_path):
    target = tmp_path / "train" / "dcnv2"
    target.mkdir(parents=True)
    (target / "v").write_text("old")
    holder = _hold(target)
    try:
        started = time.monotonic()
        with pytest.raises(OutputLocked) as refused, atomic_dir(target):
            pytest.fail("entered a locked output")
        assert time.monotonic() - started < 5
        command = shlex.join(["-c", str(target), str(tmp_path / "ready"), "dir", "60.0"])
        assert re.fullmatch(
            rf"{re.escape(str(target))}: being written by another run, pid {holder.pid} on "
            rf"{re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d: "
            rf"{re.escape(command)}; wait for it to finish or stop it",
            str(refused.value),
        ), refused.value
        assert (target / "v").read_text() == "old"
    finally:
        _kill(holder)
    with atomic_dir(target) as tmp:  # a SIGKILLed holder leaves no stale lock
        (tmp / "v").write_text("new")
    assert (target / "v").read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["dcnv2"]


def test_file_writers_wait_their_turn_and_killed_temporaries_go(tmp_path):
    """Several stages write one hidden-states manifest: a second writer waits instead of failing."""
    target = tmp_path / "cache" / "manifest.json"
    target.parent.mkdir()
    (target.parent / ".tmp-manifest.json-abcdefgh").write_text("from a killed writer")
    holder = _hold(target, kind="file", seconds=0.5)
    write_text(target, "second")  # blocks until the holder has replaced the file, so it wins
    holder.wait()
    assert holder.returncode == 0 and target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]
