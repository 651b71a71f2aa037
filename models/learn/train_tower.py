"""Training a twin tower with InfoNCE: epochs of training windows, early stopping on validation NDCG@10.

Why not :class:`models.trainer.Trainer`: that one optimises BCE on click labels and selects by AUC;
a tower learns from unlabelled sequences and is selected by a retrieval metric. What the two share
in spirit is kept: each epoch's windows, shuffle and dropout are seeded from ``(seed, epoch)``, so a
run resumed from ``state.pt`` after a kill replays what the uninterrupted run would have done.

Under torchrun (models.distributed) every rank draws the same windows and batches; each encodes its
strided share of a batch, the shares' embeddings are gathered with their gradients, and every rank
computes InfoNCE over the whole batch, so the in-batch negatives are those of one process. The
gradients are then summed over the ranks and divided by their number: the one-process gradient. Rank 0
evaluates, decides early stopping and writes the checkpoints; the others take its decisions.

Checkpoint folder: ``tower.json`` (how to rebuild the model), ``model.safetensors`` (best weights),
``state.pt`` (last epoch: weights, optimiser, counters, history) and ``history.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from llm4ctr.atomic import atomic_file, write_text
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.progress import bar as progress_bar
from llm4ctr.settings import Settings
from models.checkpoint import BEST_WEIGHTS, save_weights
from models.distributed import Processes, process_group
from models.learn.id_two_tower import IDTwoTower
from models.learn.infonce import info_nce
from models.learn.pch_tower import LearnTower, TwinTower
from models.learn.retrieval import recall_ndcg, target_ranks
from models.learn.sequences import UserSequences, histories_before, sample_windows
from models.trainer import HISTORY, STATE

log = logging.getLogger(__name__)

TOWER_CONFIG = "tower.json"
SELECT_BY = "ndcg@10"


@dataclass
class TowerConfig(Settings):
    """Optimisation settings of the tower (params.yaml ``learn.tower_train``).

    ``logq_correction``: subtract each in-batch item's log frequency as a training target from its
    logits (see :mod:`models.learn.infonce`). ``device``: auto | cpu | cuda (this rank's GPU).
    """

    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    max_epochs: int = 6
    patience: int = 4
    history_len: int = 20
    target_len: int = 10
    seed: int = 2024
    logq_correction: bool = True
    device: str = "auto"
    num_threads: int = 0
    progress: bool = True

    SECTION = "learn.tower_train"

    def __post_init__(self):
        self.require_positive("batch_size", "max_epochs", "patience", "history_len", "target_len")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ParamsError(
                f"learn.tower_train: lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )


@dataclass
class Queries:
    """Retrieval queries: one held-out (user, target) each, with the user's history before it."""

    history: np.ndarray  # [Q, H] item indices
    targets: np.ndarray  # [Q] item indices
    users: np.ndarray  # [Q] rows of the ``seen`` matrix
    rows: np.ndarray  # [Q] positions of the queries among the held-out rows given to ``build``
    dropped: int = 0  # held-out rows without any earlier training interaction (no user embedding)

    @classmethod
    def build(cls, seqs: UserSequences, users, items, times, user_rows, history_len: int) -> Queries:
        """Queries for held-out rows (user ids, item indices, timestamps); ``user_rows`` maps user id -> row."""
        history = histories_before(seqs, users, times, history_len)
        keep = (history != 0).any(axis=1)
        rows = np.array([user_rows[u] for u in np.asarray(users, dtype=object)], dtype=np.int64)
        return cls(
            history[keep], np.asarray(items, dtype=np.int64)[keep], rows[keep], np.flatnonzero(keep), int((~keep).sum())
        )


def seen_matrix(seqs: UserSequences, user_rows: dict[str, int], num_items: int) -> torch.Tensor:
    """[U, num_items + 1] bool: the items each user interacted with in training."""
    seen = torch.zeros(len(user_rows), num_items + 1, dtype=torch.bool)
    for user, items in seqs.items.items():
        seen[user_rows[user], torch.as_tensor(items)] = True
    return seen


@torch.inference_mode()
def embed_users(model: TwinTower, history: np.ndarray, batch_size: int = 4096) -> torch.Tensor:
    """[N, D] user embeddings of [N, H] histories (zeros for empty ones); each distinct history runs once."""
    model.eval()
    if len(history) == 0:
        return torch.zeros(0, model.output_dim)
    distinct, inverse = np.unique(np.asarray(history), axis=0, return_inverse=True)
    history_t = torch.as_tensor(distinct, dtype=torch.long, device=_device(model))
    parts = [model.user_embedding(history_t[i : i + batch_size]).cpu() for i in range(0, len(history_t), batch_size)]
    return torch.cat(parts)[torch.as_tensor(inverse.reshape(-1))]


@torch.inference_mode()
def embed_items(model: TwinTower, num_items: int, batch_size: int = 4096) -> torch.Tensor:
    """[num_items + 1, D] item embeddings, row 0 (padding) zero."""
    model.eval()
    ids = torch.arange(1, num_items + 1, device=_device(model))
    parts = [model.item_embedding(ids[i : i + batch_size]).cpu() for i in range(0, num_items, batch_size)]
    return torch.cat([torch.zeros(1, model.output_dim), *parts])


def query_ranks(model: TwinTower, queries: Queries, seen: torch.Tensor) -> np.ndarray:
    """0-based rank of each query's target among all unseen items (see models.learn.retrieval)."""
    items = embed_items(model, seen.shape[1] - 1)
    return target_ranks(embed_users(model, queries.history), items, queries.targets, seen, queries.users)


def evaluate(model: TwinTower, queries: Queries, seen: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Recall@k and NDCG@k of ``queries`` (plus the number of queries and of dropped rows)."""
    return {**recall_ndcg(query_ranks(model, queries, seen), k), "dropped": queries.dropped}


def fit_tower(
    model: TwinTower,
    seqs: UserSequences,
    valid: Queries,
    seen: torch.Tensor,
    config: TowerConfig,
    ckpt_dir: str | Path,
    resume: bool = True,
) -> dict:
    """Train until early stopping on validation NDCG@10; the model ends with its best weights.

    With no validation query (the cold-user protocol: no validation user has a training history to
    embed) there is nothing to select by: every epoch up to ``max_epochs`` runs and the last is kept.
    Returns ``{"best_epoch", "best": valid metrics, "epochs", "history", "train_seconds"}``.
    """
    ckpt_dir = Path(ckpt_dir)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    processes = Processes.from_env()
    device = processes.device(config.device, "learn.tower_train.device")
    processes.check_batch(config.batch_size, "learn.tower_train.batch_size")
    model.to(device)
    with process_group():  # joined first: the checkpoint start waits for every rank
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
        )
        state = _start_state(model, optimizer, ckpt_dir, resume, processes)
        select = len(valid.targets) > 0
        if not select and processes.is_main:
            log.warning(
                "no validation query has a training history (%d dropped): "
                "the towers train all %d epochs, the last is kept",
                valid.dropped,
                config.max_epochs,
            )
        bar = progress_bar(
            range(state["epoch"] + 1, config.max_epochs + 1),
            enabled=config.progress and processes.is_main,
            desc="tower epochs",
            initial=state["epoch"],
            total=config.max_epochs,
        )
        for epoch in bar:
            if select and state["bad_epochs"] >= config.patience:
                break
            started = time.perf_counter()
            loss = _train_epoch(model, optimizer, seqs, config, epoch, processes)
            if processes.is_main:
                metrics = evaluate(model, valid, seen) if select else {"dropped": valid.dropped}
                _end_epoch(model, optimizer, state, epoch, loss, metrics, time.perf_counter() - started, ckpt_dir)
                bar.set_postfix(loss=f"{loss:.3f}", ndcg=f"{metrics.get(SELECT_BY, float('nan')):.4f}")
            state = processes.broadcast(state)  # every rank stops with rank 0
        bar.close()
        processes.barrier()  # rank 0's best weights are written
    if select:
        model.load_state_dict(load_file(ckpt_dir / BEST_WEIGHTS, device=str(device)))
    else:  # nothing to select by: the model holds the last epoch, trained now or resumed
        state.update(best={"dropped": valid.dropped}, best_epoch=state["epoch"])
    return {key: state[key] for key in ("best_epoch", "best", "epoch", "history", "train_seconds")}


def _end_epoch(model, optimizer, state: dict, epoch: int, loss: float, metrics: dict, seconds: float, ckpt_dir) -> None:
    """Rank 0: record the epoch, keep the best weights by validation NDCG@10, write the checkpoint."""
    select = SELECT_BY in metrics
    state["history"].append({"epoch": epoch, "train_loss": loss, **metrics, "seconds": round(seconds, 3)})
    state["train_seconds"] += seconds
    if select and metrics[SELECT_BY] > state["best"].get(SELECT_BY, float("-inf")):
        state.update(best=metrics, best_epoch=epoch, bad_epochs=0)
        save_weights(model, ckpt_dir / BEST_WEIGHTS)
    elif select:
        state["bad_epochs"] += 1
    state["epoch"] = epoch
    _write_state(model, optimizer, state, ckpt_dir)
    log.info("tower epoch %d: loss %.4f, valid %s", epoch, loss, metrics)


def _train_epoch(
    model: TwinTower, optimizer, seqs: UserSequences, config: TowerConfig, epoch: int, processes: Processes
) -> float:
    """One pass over the epoch's windows in seeded batches; returns the mean InfoNCE loss."""
    rng = np.random.default_rng([config.seed, epoch])
    torch.manual_seed(int(rng.integers(2**62)))  # dropout
    history, targets = sample_windows(seqs, config.history_len, config.target_len, rng)
    if len(history) == 0:
        raise DataError("no training windows: every user has fewer than 2 training interactions")
    device = _device(model)
    order = torch.as_tensor(rng.permutation(len(history)))
    history_t, targets_t = torch.as_tensor(history)[order].to(device), torch.as_tensor(targets)[order].to(device)
    log_q = _target_log_frequency(targets_t) if config.logq_correction else None
    model.train()
    total = 0.0
    for start in range(0, len(order), config.batch_size):
        history_b = history_t[start : start + config.batch_size]
        targets_b = targets_t[start : start + config.batch_size]
        user, items, targets_b = _encode_shared(model, history_b, targets_b, processes)
        loss = info_nce(user, items, targets_b, model.temperature, None if log_q is None else log_q[targets_b])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        processes.average_gradients(model.parameters())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total += float(loss.detach()) * len(history_b)
    return total / len(order)


def _encode_shared(
    model: TwinTower, history: torch.Tensor, targets: torch.Tensor, processes: Processes
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user, target items, targets) of a batch: in one process its encoding; under torchrun this rank
    encodes its strided share (padded with empty rows, which are neither positives nor negatives, to the
    same length on every rank) and the shares are gathered with their gradients, in rank order."""
    if processes.world == 1:
        return (*model.encode({"history": history, "targets": targets}), targets)
    from torch.distributed.nn.functional import all_gather

    per = -(-len(history) // processes.world)
    shares = [torch.arange(rank, len(history), processes.world) for rank in range(processes.world)]
    index = torch.stack([torch.cat([s, s.new_full((per - len(s),), -1)]) for s in shares]).to(history.device)
    valid = (index >= 0).unsqueeze(-1)
    padded_history = torch.where(valid, history[index.clamp(min=0)], 0)  # [W, per, H]
    padded_targets = torch.where(valid, targets[index.clamp(min=0)], 0)  # [W, per, T]
    user, items = model.encode({"history": padded_history[processes.rank], "targets": padded_targets[processes.rank]})
    return torch.cat(all_gather(user)), torch.cat(all_gather(items)), padded_targets.flatten(0, 1)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _target_log_frequency(targets: torch.Tensor) -> torch.Tensor:
    """[max item + 1] log share of each item among the epoch's target slots (padding: 0, never used)."""
    counts = torch.bincount(targets.reshape(-1), minlength=int(targets.max()) + 1).float()
    counts[0] = 0
    return torch.log(counts.clamp(min=1) / counts.sum())


# ---------------------------------------------------------------------- checkpoints
def save_tower(model: TwinTower, directory: str | Path) -> None:
    """Write ``tower.json`` and ``model.safetensors`` (the current weights) into ``directory``."""
    directory = Path(directory)
    write_text(directory / TOWER_CONFIG, json.dumps(model.build_config, indent=2))
    save_weights(model, directory / BEST_WEIGHTS)


def load_tower(directory: str | Path) -> TwinTower:
    """Rebuild the tower saved in ``directory`` (by :func:`save_tower` or :func:`fit_tower`), in eval mode."""
    directory = Path(directory)
    try:
        config = json.loads((directory / TOWER_CONFIG).read_text(encoding="utf-8"))
        weights = load_file(directory / BEST_WEIGHTS)
    except FileNotFoundError as exc:
        raise DataError(f"{directory}: not a tower checkpoint ({exc.filename} missing)") from None
    if config["name"] == "learn_tower":
        model = LearnTower(torch.zeros(config["content_shape"]), **config["hparams"])
    elif config["name"] == "id_two_tower":
        model = IDTwoTower(**config["hparams"])
    else:
        raise DataError(f"{directory / TOWER_CONFIG}: unknown tower '{config['name']}'")
    model.load_state_dict(weights)
    return model.eval()


def _start_state(model: TwinTower, optimizer, ckpt_dir: Path, resume: bool, processes: Processes) -> dict:
    path = ckpt_dir / STATE
    if resume and path.exists():
        saved = torch.load(path, map_location=_device(model), weights_only=True)
        if saved["config"] != model.build_config:
            raise ParamsError(
                f"{path}: checkpoint was written for another tower configuration; delete it or train with resume=False"
            )
        model.load_state_dict(saved.pop("model"))
        optimizer.load_state_dict(saved.pop("optimizer"))
        log.info("resuming %s after epoch %d", ckpt_dir, saved["epoch"])
        return saved
    processes.barrier()  # nobody may still be reading an old state we are about to replace
    if processes.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for name in (STATE, BEST_WEIGHTS, HISTORY):
            (ckpt_dir / name).unlink(missing_ok=True)
        write_text(ckpt_dir / TOWER_CONFIG, json.dumps(model.build_config, indent=2))
    return {
        "config": model.build_config,
        "epoch": 0,
        "best": {},
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "train_seconds": 0.0,
    }


def _write_state(model: TwinTower, optimizer, state: dict, ckpt_dir: Path) -> None:
    payload = {
        **state,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
    }
    with atomic_file(ckpt_dir / STATE) as tmp:
        torch.save(payload, tmp)
    write_text(ckpt_dir / HISTORY, json.dumps(state["history"], indent=2))
