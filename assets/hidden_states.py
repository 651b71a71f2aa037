"""Stages `hidden_states_<kind>`: frozen-model states of the prompts (user, scenario, item; GPT4SM's teacher).

Each reads artifacts/prompts/<dataset>/<kind>.parquet, makes sure every text's state is in the
content-addressed store (``models.hidden_states``; params ``hidden_states.store``, by default
``$LLM4CTR_CACHE/hidden_states``, shared by all datasets and runs), then exports the states in
prompt order to artifacts/hidden_states_<kind>/<dataset>/:

- states.safetensors: tensor ``states`` (rows x dim, fp32), header metadata with the model and pooling;
- index.parquet: the id column of the prompts (scenario / user_id / item_id), the cache key and the
  untruncated token count of each row.

`hidden_states_teacher` embeds two kinds, the item texts and the user profiles, with the model of
``hidden_states.teacher`` (GPT4SM's teacher), into artifacts/hidden_states_teacher/<dataset>/item/ and
.../profile/, each in the layout above.

The store lives outside artifacts/ on purpose: DVC deletes a stage's outputs before re-running it,
and the cache must survive that to make re-runs free and killed runs resumable. Under torchrun only
rank 0 writes the export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.pretrained import fingerprint, resolve
from assets.prompts import ID_COLUMNS, TEMPLATES_FILE
from assets.prompts import STAGE as PROMPTS_STAGE
from assets.tables import read_json, read_table, write_table
from llm4ctr.atomic import atomic_dir, save_tensors
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir, cache_dir, portable
from models.hidden_states import DTYPES, POOLINGS, Encoder, cache_states, read_states

ROLES = ("llm", "plm")  # hidden_states.<kind>.model: a role (its <role>.name is the model) or a model name
TEACHER_KINDS = ("item", "profile")  # the texts GPT4SM's teacher embeds
TOKEN_BINS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def stage_name(kind: str) -> str:
    return f"hidden_states_{kind}"


def _positive_int(params: Params, key: str) -> int:
    value = params.get_path(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParamsError(f"{params.source}: {key} must be a positive integer, got {value!r}")
    return value


def role_model(params: Params, source: str) -> str:
    """The model folder of ``source``: a role (llm / plm: that section's ``name``) or a model name/path."""
    return resolve(str(params.get_path(f"{source}.name")) if source in ROLES else source)


def encoder_for(params: Params, kind: str) -> Encoder:
    """The frozen model, pooling, length limit, device and dtype configured for ``kind``'s cache."""
    source = params.get_path(f"hidden_states.{kind}.model")
    if not isinstance(source, str) or not source:
        raise ParamsError(
            f"{params.source}: hidden_states.{kind}.model must be {' or '.join(ROLES)} or a model name, got {source!r}"
        )
    pooling = params.get_path(f"hidden_states.{kind}.pooling")
    if pooling not in POOLINGS:
        raise ParamsError(
            f"{params.source}: hidden_states.{kind}.pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}"
        )
    dtype = params.get_path("hidden_states.dtype")
    if dtype != "auto" and dtype not in DTYPES:
        raise ParamsError(
            f"{params.source}: hidden_states.dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}"
        )
    max_length = _positive_int(params, "hidden_states.max_length")
    model = role_model(params, source)
    return Encoder(model, fingerprint(model), pooling, max_length, str(params.get_path("hidden_states.device")), dtype)


def store_root(params: Params, root: Path) -> Path:
    """Where the shard store lives: hidden_states.store (relative to the project root), or the user cache."""
    value = params.get_path("hidden_states.store")
    return cache_dir() / "hidden_states" if value is None else Path(root) / str(value)


def token_histogram(tokens: list[int]) -> dict[str, int]:
    """Counts of token lengths in power-of-two bins: {"<=16": n, "17-32": n, ..., ">4096": n}."""
    edges = (0, *TOKEN_BINS, np.inf)
    counts, _ = np.histogram(np.asarray(tokens, dtype=float), bins=np.asarray(edges) + 0.5)
    labels = (
        [f"<={TOKEN_BINS[0]}"] + [f"{a + 1}-{b}" for a, b in zip(TOKEN_BINS, TOKEN_BINS[1:])] + [f">{TOKEN_BINS[-1]}"]
    )
    return {label: int(n) for label, n in zip(labels, counts)}


def _cache_kind(params: Params, root: Path, encoder: Encoder, kind: str):
    """Make sure every ``kind`` prompt's state is in the store; (prompts, template id, cache run, figures)."""
    dataset = params.get_path("data.name")
    folder = artifact_dir(root, PROMPTS_STAGE, dataset)
    prompts = read_table(folder / f"{kind}.parquet")
    template_id = read_json(folder / TEMPLATES_FILE)[kind]["id"]
    run = cache_states(
        encoder,
        prompts["text"].tolist(),
        template_id,
        store_root(params, root),
        batch_size=_positive_int(params, "hidden_states.batch_size"),
        shard_size=_positive_int(params, "hidden_states.shard_size"),
    )
    figures = {
        "dataset": dataset, "kind": kind, "rank": run.rank, "world_size": run.world,
        "cache_hits": run.hits, "cache_misses": run.misses, "computed_here": run.computed_here,
        "compute_seconds": round(run.compute_seconds, 2), "load_seconds": round(run.load_seconds, 2),
        "texts_per_s": round(run.computed_here / run.compute_seconds, 2) if run.compute_seconds else None,
        "tokens_per_s": round(run.tokens_here / run.compute_seconds, 1) if run.compute_seconds else None,
    }  # fmt: skip
    return prompts, template_id, run, figures


def _export_kind(params: Params, root: Path, encoder: Encoder, kind: str, prompts, template_id, run, dest: Path):
    """Write states.safetensors and index.parquet of ``kind`` into ``dest``; the export's figures."""
    states = read_states(run)
    spec = {
        **run.spec,
        "model": portable(run.spec["model"], root),
        "dim": run.dim,
        "template_id": template_id,
        "kind": kind,
        "dataset": params.get_path("data.name"),
    }  # the model folder relative to the project when inside it
    dest.mkdir(parents=True, exist_ok=True)
    save_tensors({"states": states}, dest / "states.safetensors", metadata={"spec": json.dumps(spec, sort_keys=True)})
    index = pd.DataFrame({ID_COLUMNS[kind]: prompts[ID_COLUMNS[kind]], "key": run.keys, "tokens": run.tokens})
    write_table(index, dest / "index.parquet")
    tokens = np.asarray(run.tokens)
    return {
        "model": encoder.model, "model_id": encoder.model_id, "pooling": encoder.pooling,
        "device": run.device, "dtype": run.dtype,
        "count": len(prompts), "distinct_texts": run.hits + run.misses, "dim": run.dim,
        "tokens_mean": round(float(tokens.mean()), 1) if len(tokens) else 0.0,
        "tokens_max": int(tokens.max()) if len(tokens) else 0,
        "truncated": int((tokens > encoder.max_length).sum()),
        "token_histogram": token_histogram(run.tokens), "store": str(run.store),
    }  # fmt: skip


def run_kind(params: Params, root: Path, kind: str) -> dict[str, Any]:
    """Cache and export the hidden states of ``kind``'s prompts (scenario, user or item)."""
    encoder = encoder_for(params, kind)
    prompts, template_id, run, figures = _cache_kind(params, root, encoder, kind)
    if run.rank != 0:
        return figures
    with atomic_dir(artifact_dir(root, stage_name(kind), params.get_path("data.name"))) as tmp:
        exported = _export_kind(params, root, encoder, kind, prompts, template_id, run, tmp)
    return {**figures, **exported}


def run_teacher(params: Params, root: Path) -> dict[str, Any]:
    """GPT4SM's teacher embeddings of the item texts and the user profiles, one subfolder each
    (``item/``, ``profile/``, the layout of every other kind), from ``hidden_states.teacher``."""
    encoder = encoder_for(params, "teacher")
    cached = {kind: _cache_kind(params, root, encoder, kind) for kind in TEACHER_KINDS}
    figures = {f"{kind}_{k}": v for kind, (*_, fig) in cached.items() for k, v in fig.items() if k != "kind"}
    if next(iter(cached.values()))[2].rank != 0:
        return figures
    with atomic_dir(artifact_dir(root, stage_name("teacher"), params.get_path("data.name"))) as tmp:
        for kind, (prompts, template_id, run, _) in cached.items():
            exported = _export_kind(params, root, encoder, kind, prompts, template_id, run, tmp / kind)
            figures.update({f"{kind}_{k}": v for k, v in exported.items()})
    return figures


def run_user(params: Params, root: Path) -> dict[str, Any]:
    """LLM4MSR user-level states (last token of each user prompt)."""
    return run_kind(params, root, "user")


def run_scenario(params: Params, root: Path) -> dict[str, Any]:
    """LLM4MSR scenario-level states (last token of each scenario prompt)."""
    return run_kind(params, root, "scenario")


def run_item(params: Params, root: Path) -> dict[str, Any]:
    """LEARN item content embeddings (mean of the last layer, L2-normalised)."""
    return run_kind(params, root, "item")
