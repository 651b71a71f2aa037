"""Screenshots of the Dagster UI for the docs: the lineage of the served model, the evaluate asset
(its score table and ROC figure) and the drift asset (report links, per-segment drifted shares).

Run after `make run` (the outputs of params.yaml's dataset exist and dvc.lock records them)::

    make screenshots            # = python -m orchestration.screenshots --out docs/screenshots

It starts `dagster dev` on 127.0.0.1 with a fresh instance in a temporary DAGSTER_HOME, materializes
``--select`` (default: evaluate, bento and drift, with their checks) on the default partition through
the `dagster` CLI, waits until the dvc.lock sensor has reported the stages `dvc repro` ran, drives
headless Chromium (Playwright with the system's chromium, ``$CHROMIUM``) to each page, and stops
Dagster by its process group. The PNGs are rewritten in place, so the docs always show what the
current code draws.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from llm4ctr.errors import DataError, Llm4ctrError
from llm4ctr.params import PARAMS_FILE, load_params
from llm4ctr.paths import artifact_dir

BIN = Path(sys.executable).parent
DEFAULT_SELECT = "evaluate,bento,drift"
WIDTH = 1600
DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def chromium() -> str:
    """The Chromium binary Playwright drives: ``$CHROMIUM``, else chromium on the PATH."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise Llm4ctrError("no Chromium: install it (Debian: apt-get install chromium) or set CHROMIUM=/path/to/it")
    return found


def wait_http(url: str, seconds: float, process: subprocess.Popen, log: Path) -> None:
    """Wait until ``url`` answers 200; fail with the log's tail when the server dies or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Llm4ctrError(f"dagster dev exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise Llm4ctrError(f"{url} did not answer within {seconds:.0f}s; log: {log}")


def wait_reported(home: Path, asset: str, seconds: float) -> bool:
    """Whether ``asset`` has a materialization in the instance at ``home`` within ``seconds`` (the
    dvc.lock sensor's report of what `dvc repro` ran)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    deadline = time.monotonic() + seconds
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            if instance.get_latest_materialization_event(dg.AssetKey(asset)) is not None:
                return True
            time.sleep(3)
    return False


def shoot(base: str, dataset: str, out: Path) -> list[Path]:
    """The screenshots, each after the page has drawn what it shows; the files written."""
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()

        def visit(path: str, shown: str, size: tuple[int, int], settle_ms: int = 1500) -> None:
            """Open ``path`` in a ``size`` window and wait until the text ``shown`` is drawn."""
            page.set_viewport_size({"width": size[0], "height": size[1]})
            page.goto(f"{base}{path}")
            page.get_by_text(shown, exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(settle_ms)  # layout, images and status colours settle

        def save(name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            written.append(path)

        # wide enough that the graph is drawn at a scale showing each asset's status
        visit(f"/assets/drift?view=lineage&lineageScope=upstream&lineageDepth=4&partition={dataset}", "bento",
              (2400, 1100), settle_ms=3000)  # fmt: skip
        save("lineage")
        visit(f"/assets/evaluate?partition={dataset}", "scores", (WIDTH, 1500))
        save("evaluate")
        row = page.locator("tr", has=page.get_by_text("roc", exact=True)).first
        row.get_by_text("[Show Markdown]").click()
        page.get_by_role("img").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        save("evaluate_roc")
        visit(f"/assets/drift?partition={dataset}", "segments", (WIDTH, 1800))
        save("drift")
        browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="folder for the PNGs")
    parser.add_argument("--select", default=DEFAULT_SELECT, help="assets to materialize first (dagster selection)")
    parser.add_argument("--port", type=int, default=3013, help="port of the temporary dagster dev (127.0.0.1)")
    args = parser.parse_args(argv)
    root = Path.cwd()
    dataset = load_params(root / PARAMS_FILE).get_path("data.name")
    if not (artifact_dir(root, "evaluate", dataset) / "results.json").is_file():
        raise DataError(f"artifacts/evaluate/{dataset}/results.json: not found; run `make run` first")
    chromium()
    home = Path(tempfile.mkdtemp(prefix="llm4ctr-screenshots-"))
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    log = home / "dagster-dev.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(args.port), "-m", "orchestration.definitions"],
            cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{args.port}"
        wait_http(f"{base}/server_info", 180, server, log)
        subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions",
             "--select", args.select, "--partition", dataset],
            cwd=root, env=env, check=True,
        )  # fmt: skip
        if not wait_reported(home, "ingest", 240):
            print("the dvc.lock sensor reported nothing in 240 s: upstream assets show as never materialized")
        args.out.mkdir(parents=True, exist_ok=True)
        for path in shoot(base, dataset, args.out):
            print(f"wrote {path}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Llm4ctrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
