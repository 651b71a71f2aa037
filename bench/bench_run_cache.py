"""DVC's run-cache across clones and across param values, timed on ML-100K.

    python bench/bench_run_cache.py [--target train@dcnv2]   # minutes on 2 cores; writes the block in docs/TEAM.md

Two fresh clones of this repository's HEAD under artifacts/.work/bench-run-cache/ and a local DVC remote:

1. clone A fetches ML-100K and runs ``dvc repro <target>`` (every stage up to it), then
   ``dvc push --run-cache``;
2. clone B (no data, no dvc.lock) runs ``dvc repro --pull <target>``, as ``make run`` does: every stage
   must be restored from the remote, none run, and its outputs must equal A's byte for byte;
3. in A, ``split.method`` random -> user_time -> random (``dvc exp run``): the third run must restore
   from the run-cache, running nothing.

Each step's wall time and the stages DVC ran or restored go to bench/results/run_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm4ctr.atomic import replace_block  # noqa: E402
from tests.fixtures_raw import tree_bytes  # noqa: E402

WORK = ROOT / "artifacts" / ".work" / "bench-run-cache"
RECORD = ROOT / "bench" / "results" / "run_cache.json"
DOC = ROOT / "docs" / "TEAM.md"
RAN = re.compile(r"Running stage '([^']+)'")
RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")


def step(name: str, command: list[str], cwd: Path, log) -> dict:
    """Run ``command`` in ``cwd``; its wall time and the stages DVC ran and restored."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    print(f"$ (cd {cwd.name} && {' '.join(command)})", file=log, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name}: `{' '.join(command)}` failed ({done.returncode}); see {log.name}")
    return {
        "step": name,
        "command": " ".join(command),
        "seconds": round(seconds, 1),
        "ran": RAN.findall(done.stdout),
        "restored": RESTORED.findall(done.stdout),
    }


def run(target: str) -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    a, b, remote = WORK / "a", WORK / "b", WORK / "remote"
    steps = []
    with (WORK / "bench.log").open("w") as log:
        for clone in (a, b):
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            step("remote", ["dvc", "remote", "add", "--local", "--default", "local", str(remote)], clone, log)
        step("fetch", ["llm4ctr", "fetch"], a, log)
        step("add data", ["dvc", "add", "-q", "data"], a, log)
        steps.append(step("A: run", ["dvc", "repro", target], a, log))
        steps.append(step("A: push", ["dvc", "push", "--run-cache"], a, log))
        steps.append(step("B: restore", ["dvc", "repro", "--pull", target], b, log))
        stages = [s for s in steps[0]["ran"] if (a / "artifacts" / s.split("@")[0]).is_dir()]
        same = all(
            tree_bytes(b / "artifacts" / s.split("@")[0]) == tree_bytes(a / "artifacts" / s.split("@")[0])
            for s in stages
        )
        for method in ("user_time", "random"):
            steps.append(
                step(f"A: split.method={method}", ["dvc", "exp", "run", "-S", f"split.method={method}", target], a, log)
            )
    return {"target": target, "clone_b_outputs_equal_a": same, "steps": steps}


def markdown(record: dict) -> str:
    lines = [
        f"`python bench/bench_run_cache.py --target {record['target']}` (ML-100K, 2 CPU cores):",
        "",
        "| step | command | seconds | stages run | stages restored |",
        "|---|---|---|---|---|",
    ]
    for s in record["steps"]:
        lines.append(f"| {s['step']} | `{s['command']}` | {s['seconds']} | {len(s['ran'])} | {len(s['restored'])} |")
    lines.append("")
    lines.append(f"Clone B's outputs equal clone A's byte for byte: {record['clone_b_outputs_equal_a']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="train@dcnv2", help="the DVC stage the runs reproduce (with its inputs)")
    args = parser.parse_args()
    record = run(args.target)
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    replace_block(DOC, "run cache", markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
