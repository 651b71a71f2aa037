"""Put a bento stage output folder into a BentoML model store, through BentoML's public API only.

A bento folder (``artifacts/bento/<dataset>/``, written by the ``bento`` stage) holds ``model/`` (the
files the service loads), ``model_card.md`` and ``registration.json`` (the tag, its labels and
metadata). Registering it creates the BentoML model ``<tag>`` with those files, labels and metadata.
The tag's version is a digest of the model files, so a folder always registers under the same tag.

BentoML fixes its home (``$BENTOML_HOME``) the first time a process uses its store and offers no
public way to change it afterwards, so the stage registers in a fresh process with the wanted
``BENTOML_HOME`` (:func:`register_in`). The same entry point serves ``make serve``::

    python -m assets.bento_store [--if-missing] [BENTO_DIR]   # prints the tag

Without ``--if-missing`` an existing model with the tag is replaced (it becomes ``name:latest``);
with it an existing one is left as it is. That is how a bento stage that DVC restored from its
run-cache (outputs present, nothing in this clone's store) gets registered before serving.
``BENTO_DIR`` defaults to ``artifacts/bento/<data.name>`` of ``$LLM4CTR_PARAMS`` (else ./params.yaml).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from llm4ctr.errors import DataError, Llm4ctrError

MODEL_DIR = "model"
REGISTRATION = "registration.json"
MODEL_CARD = "model_card.md"
FILES = ("model.json", "model.safetensors", "encoder.json")  # what the service loads
PROJECT = Path(__file__).resolve().parents[1]


def files_digest(folder: Path) -> str:
    """A version string from the bytes of the model files in ``folder``."""
    sha = hashlib.sha256()
    for name in FILES:
        sha.update(name.encode())
        sha.update((Path(folder) / name).read_bytes())
    return sha.hexdigest()[:16]


def read_bento_dir(bento_dir: Path) -> dict[str, Any]:
    """registration.json of ``bento_dir``, checked against its model files; DataError naming what is wrong."""
    bento_dir = Path(bento_dir)
    path = bento_dir / REGISTRATION
    if not path.is_file():
        raise DataError(f"{path}: not found; run the bento stage first (`llm4ctr stage bento` or `make run`)")
    registration = json.loads(path.read_text(encoding="utf-8"))
    missing = [name for name in FILES if not (bento_dir / MODEL_DIR / name).is_file()]
    missing += [] if (bento_dir / MODEL_CARD).is_file() else [MODEL_CARD]
    if missing:
        raise DataError(f"{bento_dir}: lacks {missing}; run the bento stage again")
    version = files_digest(bento_dir / MODEL_DIR)
    if registration.get("tag", "").split(":")[-1] != version:
        raise DataError(
            f"{path}: tag {registration.get('tag')!r} does not match the model files (version {version}); "
            "run the bento stage again"
        )
    return registration


def register(bento_dir: Path, if_missing: bool = False) -> tuple[str, bool]:
    """Register ``bento_dir`` in this process's BentoML store; (tag, whether a model was created)."""
    import bentoml

    bento_dir = Path(bento_dir)
    registration = read_bento_dir(bento_dir)
    tag = registration["tag"]
    try:
        bentoml.models.get(tag)
        if if_missing:
            return tag, False
        bentoml.models.delete(tag)
    except bentoml.exceptions.NotFound:
        pass
    metadata = {k: v for k, v in registration.items() if k not in ("tag", "labels")}
    with bentoml.models.create(tag, labels=registration["labels"], metadata=metadata) as model:
        for name in FILES:
            shutil.copy2(bento_dir / MODEL_DIR / name, model.path_of(name))
        shutil.copy2(bento_dir / MODEL_CARD, model.path_of(MODEL_CARD))
    return tag, True


def register_in(bento_dir: Path, home: Path) -> str:
    """Register ``bento_dir`` in the store under ``home`` (a fresh process with ``BENTOML_HOME=home``)."""
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONPATH": os.pathsep.join(filter(None, (str(PROJECT), os.environ.get("PYTHONPATH")))),
    }
    out = subprocess.run(
        [sys.executable, "-m", "assets.bento_store", str(bento_dir)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise DataError(f"registering {bento_dir} in the BentoML store {home}/models failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def default_bento_dir() -> Path:
    """artifacts/bento/<data.name> of the params file ($LLM4CTR_PARAMS, else ./params.yaml)."""
    from llm4ctr.params import load_params

    params = load_params(os.environ.get("LLM4CTR_PARAMS") or "params.yaml")
    return Path("artifacts") / "bento" / str(params.get_path("data.name"))


def main(argv: list[str] | None = None) -> int:
    from llm4ctr.env import apply_defaults

    parser = argparse.ArgumentParser(prog="python -m assets.bento_store", description=__doc__.split("\n\n")[0])
    parser.add_argument("bento_dir", nargs="?", type=Path, help="default: artifacts/bento/<data.name>")
    parser.add_argument("--if-missing", action="store_true", help="leave an existing model with the tag alone")
    args = parser.parse_args(argv)
    apply_defaults()
    try:
        tag, created = register(args.bento_dir or default_bento_dir(), if_missing=args.if_missing)
    except Llm4ctrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    home = os.environ.get("BENTOML_HOME", "~/bentoml")
    print(f"{'registered' if created else 'already registered'}: {tag} in {home}/models", file=sys.stderr)
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
