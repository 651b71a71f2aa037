"""A fast, resumable cache of frozen-model hidden states (LLM4MSR prompts, LEARN item texts).

A frozen Hugging Face model (decoder or encoder, loaded with ``AutoModel``: no LM head) runs under
``torch.inference_mode`` in fp32 on CPU and bf16 (fp16 where bf16 is unsupported) on GPU. Texts are
sorted by token length and cut into batches, so padding is minimal. Pooling:

- ``last_token`` (LLM4MSR): the last layer's state at the last real token. Right padding; long texts
  are cut on the LEFT so the question at the end of a prompt survives.
- ``mean`` (LEARN): the attention-mask mean of the last layer, L2-normalised; cut on the right.

Storage is content-addressed. Every text has a key, sha256 of (namespace, template id, text), where
the namespace hashes the model fingerprint, pooling, max length and compute dtype. States go to
safetensors shards of about ``shard_size`` rows (written as they fill, so memory stays
bounded), each shard naming its keys in its header; ``manifest.json`` maps key -> (shard, row, token
count). Hence:

- a re-run computes nothing that is cached (and loads no model when nothing is missing);
- a killed run resumes: finished shards are found from their headers even when the manifest was
  never rewritten;
- a changed template recomputes only the entries whose text changed.

Under torchrun every rank takes every world-th batch of the same sorted batch list (so a batch
holds the same texts as in a one-process run), writes its own shards, and rank 0 merges the one
manifest after a barrier.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from llm4ctr.atomic import save_tensors, write_text
from llm4ctr.progress import bar as progress_bar
from models.batching import token_batches
from models.distributed import MAPPED, load_pretrained, process_group

POOLINGS = ("last_token", "mean")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.safetensors"


@dataclass(frozen=True)
class Encoder:
    """What a hidden state depends on besides its text.

    ``model``: anything ``AutoModel.from_pretrained`` loads (a local folder or a hub name);
    ``model_id``: a stable id of those weights (see ``assets.pretrained.fingerprint``);
    ``device``: auto | cpu | cuda | cuda:N | map (one model over every GPU, then the CPU);
    ``dtype``: auto | float32 | bfloat16 | float16.
    """

    model: str
    model_id: str
    pooling: str
    max_length: int
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {self.max_length!r}")


@dataclass
class CacheRun:
    """What one call of :func:`cache_states` did; ``tokens[i]`` is the untruncated length of ``keys[i]``."""

    keys: list[str]
    tokens: list[int]
    store: Path
    dim: int
    device: str
    dtype: str
    hits: int  # distinct texts found in the cache
    misses: int  # distinct texts computed by all ranks together
    computed_here: int = 0  # texts this rank computed
    tokens_here: int = 0  # real (unpadded) tokens this rank ran through the model
    compute_seconds: float = 0.0  # model loading excluded
    load_seconds: float = 0.0
    rank: int = 0
    world: int = 1
    spec: dict = field(default_factory=dict)
    entries: dict[str, tuple[str, int, int]] = field(default_factory=dict, repr=False)  # the merged index (rank 0)


def entry_key(namespace: str, template_id: str, text: str) -> str:
    """The cache key of one text: sha256 of (namespace, template id, text)."""
    return hashlib.sha256(json.dumps([namespace, template_id, text]).encode()).hexdigest()


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto``: fp32 on CPU; bf16 on GPU where supported, else fp16."""
    if dtype != "auto":
        return dtype
    if device.type != "cuda":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``hidden`` (batch x time x dim, right-padded per ``mask``) into fp32 batch x dim."""
    hidden = hidden.float()
    if pooling == "last_token":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    return torch.nn.functional.normalize(mean, dim=-1)


# ----------------------------------------------------------------------------------------------
# The shard store
# ----------------------------------------------------------------------------------------------


class ShardStore:
    """One namespace's folder of shards plus the manifest that indexes them."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def index(self) -> dict[str, tuple[str, int, int]]:
        """key -> (shard file name, row, token count), from the manifest plus any shard it misses."""
        present = {p.name for p in self.folder.glob(SHARD_GLOB)}
        manifest = self.folder / MANIFEST
        entries: dict[str, tuple[str, int, int]] = {}
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            entries = {k: tuple(v) for k, v in data["entries"].items() if v[0] in present}  # shards may be deleted
            present -= set(data["shards"])
        for name in sorted(present):  # shards written after the manifest (a killed run, other ranks)
            keys, tokens = self.header(self.folder / name)
            for row, (key, count) in enumerate(zip(keys, tokens)):
                entries.setdefault(key, (name, row, count))
        return entries

    @staticmethod
    def header(shard: Path) -> tuple[list[str], list[int]]:
        """The keys and token counts a shard holds, read from its header only."""
        from safetensors import safe_open

        with safe_open(str(shard), framework="pt") as handle:
            meta = handle.metadata()
        return json.loads(meta["keys"]), json.loads(meta["tokens"])

    def write_shard(self, name: str, keys: list[str], states: torch.Tensor, tokens: list[int]) -> None:
        """Write one shard atomically: a kill leaves either the whole shard or none."""

        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"keys": json.dumps(keys), "tokens": json.dumps(tokens)}
        save_tensors({"states": states.contiguous()}, self.folder / name, metadata=meta)

    def write_manifest(self, entries: dict[str, tuple[str, int, int]], spec: dict) -> None:
        shards = sorted({shard for shard, _, _ in entries.values()})
        write_text(self.folder / MANIFEST, json.dumps({"spec": spec, "shards": shards, "entries": entries}))

    def gather(self, keys: Sequence[str], entries: dict[str, tuple[str, int, int]]) -> torch.Tensor:
        """The fp32 states of ``keys`` in order (len(keys) x dim), reading one shard at a time."""
        from safetensors import safe_open

        missing = [k for k in keys if k not in entries]
        if missing:
            raise KeyError(f"{self.folder}: {len(missing)} keys are not cached (first: {missing[0]})")
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            shard, row, _ = entries[key]
            by_shard.setdefault(shard, []).append((position, row))
        out: torch.Tensor | None = None
        for shard, pairs in by_shard.items():
            with safe_open(str(self.folder / shard), framework="pt") as handle:
                states = handle.get_tensor("states")
            if out is None:
                out = torch.empty(len(keys), states.shape[1], dtype=torch.float32)
            positions, rows = (torch.tensor(x) for x in zip(*pairs))
            out[positions] = states[rows].float()
        return out if out is not None else torch.empty(0, 0)


# ----------------------------------------------------------------------------------------------
# Computing
# ----------------------------------------------------------------------------------------------


def load(encoder: Encoder, device: torch.device, dtype: str):
    """The frozen model (no LM head) and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder.model)
    model = load_pretrained(AutoModel, encoder.model, DTYPES[dtype], device, encoder.device == MAPPED)
    model.config.use_cache = False  # no key/value cache: one forward per batch
    return tokenizer, model


def tokenize(tokenizer, texts: list[str], encoder: Encoder, chunk: int = 4096) -> tuple[list[np.ndarray], list[int]]:
    """Token ids (int32 arrays) cut to ``max_length``, left for last_token and right for mean, and the
    untruncated lengths. Tokenized ``chunk`` texts at a time: Python int lists would cost ~36 B a token."""
    tokenizer.truncation_side = "left" if encoder.pooling == "last_token" else "right"
    ids: list[np.ndarray] = []
    lengths: list[int] = []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        full = tokenizer(part, add_special_tokens=True)["input_ids"]
        lengths += [len(x) for x in full]
        long = [i for i, x in enumerate(full) if len(x) > encoder.max_length]
        if long:
            cut = tokenizer(
                [part[i] for i in long], add_special_tokens=True, truncation=True, max_length=encoder.max_length
            )
            for i, row in zip(long, cut["input_ids"]):
                full[i] = row
        ids += [np.asarray(x, dtype=np.int32) for x in full]
    return ids, lengths


def batches(ids: list[np.ndarray], keys: list[str], batch_size: int, batch_tokens: int = 0) -> list[list[int]]:
    """Indices into ``ids`` in batches of similar length, longest first (a too-large batch fails at once):
    at most ``batch_size`` texts and, when ``batch_tokens`` > 0, at most that many padded tokens."""
    return token_batches([len(x) for x in ids], batch_tokens or sys.maxsize, batch_size, tiebreak=keys.__getitem__)


def forward(model, rows: list[np.ndarray], pad_id: int, pooling: str, device: torch.device) -> torch.Tensor:
    """Pooled fp32 states (on the CPU) of one right-padded batch of token id arrays."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.from_numpy(row)
        mask[i, : len(row)] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return pool(hidden, mask, pooling).cpu()


def cache_states(
    encoder: Encoder,
    texts: Sequence[str],
    template_id: str,
    store_root: Path,
    *,
    batch_size: int,
    shard_size: int,
    batch_tokens: int = 0,
    progress: bool = True,
) -> CacheRun:
    """Make sure the states of ``texts`` are in the store under ``store_root``; report what was done.

    Rank 0's returned ``CacheRun`` (after the merge) covers every text; :func:`read_states` then
    returns them in order.
    """
    # the ranks meet only at barriers, where one may wait long for the shards of the others
    with process_group(timeout=timedelta(hours=24)) as processes:
        rank, world, barrier = processes.rank, processes.world, processes.barrier
        device = processes.device(encoder.device, "hidden_states.device", mappable=True)
        dtype = resolve_dtype(encoder.dtype, device)
        spec = {
            "model": encoder.model, "model_id": encoder.model_id, "pooling": encoder.pooling,
            "max_length": encoder.max_length, "dtype": dtype,
        }  # fmt: skip
        # the namespace leaves out where the model lies: its fingerprint says which weights it is
        namespace = hashlib.sha256(json.dumps(spec | {"model": None}, sort_keys=True).encode()).hexdigest()[:16]
        store = ShardStore(Path(store_root) / namespace)
        keys = [entry_key(namespace, template_id, t) for t in texts]
        entries = store.index()
        pending = {k: t for k, t in zip(keys, texts) if k not in entries}  # distinct texts to compute
        run = CacheRun(
            keys=keys, tokens=[], store=store.folder, dim=0, device=str(device), dtype=dtype,
            hits=len(set(keys)) - len(pending), misses=len(pending), rank=rank, world=world, spec=spec,
        )  # fmt: skip
        barrier()  # every rank has read the same index before any rank writes a shard
        if pending:
            _compute(
                encoder,
                list(pending),
                list(pending.values()),
                store,
                run,
                device,
                (batch_size, batch_tokens),
                shard_size,
                progress,
            )
        barrier()
        if rank == 0:
            run.entries = store.index()
            run.dim = _dim(store.folder / run.entries[keys[0]][0]) if keys else 0
            # like the namespace, the store's manifest leaves out where the model lies (a path on one machine)
            store.write_manifest(run.entries, {k: v for k, v in spec.items() if k != "model"} | {"dim": run.dim})
            run.tokens = [run.entries[k][2] for k in keys]
        return run


def _compute(encoder, keys, texts, store, run, device, budget, shard_size, progress) -> None:
    """Compute this rank's share of ``texts`` in batches of ``budget`` = (texts, padded tokens) at most,
    writing a shard whenever ``shard_size`` rows are buffered."""
    started = time.perf_counter()
    tokenizer, model = load(encoder, device, run.dtype)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, lengths = tokenize(tokenizer, texts, encoder)
    mine = batches(ids, keys, *budget)[run.rank :: run.world]
    run.load_seconds = time.perf_counter() - started
    tag = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}-r{run.rank:03d}"  # unique per run and rank
    rows: list[int] = []
    states: list[torch.Tensor] = []
    started = time.perf_counter()
    bar = progress_bar(
        mine, enabled=progress and run.rank == 0, desc=f"hidden states ({encoder.pooling})", unit="batch"
    )
    with torch.inference_mode():
        for position, batch in enumerate(bar):
            states.append(forward(model, [ids[i] for i in batch], pad_id, encoder.pooling, device))
            rows += batch
            run.computed_here += len(batch)
            run.tokens_here += sum(len(ids[i]) for i in batch)
            if len(rows) >= shard_size or position == len(mine) - 1:
                name = f"shard-{tag}-{position:05d}.safetensors"
                store.write_shard(name, [keys[i] for i in rows], torch.cat(states), [lengths[i] for i in rows])
                rows, states = [], []
    run.compute_seconds = time.perf_counter() - started


def _dim(shard: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(shard), framework="pt") as handle:
        return handle.get_slice("states").get_shape()[1]


def read_states(run: CacheRun) -> torch.Tensor:
    """The states of ``run.keys`` in order (rank 0, after :func:`cache_states`)."""
    return ShardStore(run.store).gather(run.keys, run.entries)
