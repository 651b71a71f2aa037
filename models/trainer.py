"""Training CTR models: AdamW, validation AUC every epoch, early stopping, resumable checkpoints.

Design choices, and why:

* Batches are gathered from pre-built tensors: each step takes its rows of the epoch permutation with
  one ``index_select`` per field. No per-sample Dataset/DataLoader work, which on a 2-core CPU costs
  more than the small CTR models themselves (hence no ``num_workers`` option), and no permuted copy of
  the training set per epoch (memory stays at one copy plus a batch).
* Reproducibility does not depend on saved RNG streams: epoch ``e``'s shuffle and dropout seeds are
  derived from ``(seed, e)``. A run resumed after a kill at any epoch boundary therefore replays
  exactly what the uninterrupted run would have done, on CPU bit for bit.
* Checkpoint directory (every file written atomically, rank 0 only):
  ``model.json`` (how to rebuild the model), ``model.safetensors`` (best weights so far),
  ``state.pt`` (last epoch: weights, optimizer, counters, history — what resuming needs) and
  ``history.json`` (the per-epoch metrics, for people).
* Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DDP; each rank trains on the strided
  shard ``perm[rank::world]`` of the epoch's permutation (padded like DistributedSampler so all
  ranks take the same number of steps) with ``batch_size // world`` rows per step, so one global
  step sees the same rows as a single-process step. Rank 0 evaluates, decides early stopping,
  broadcasts its counters and history and writes the checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from llm4ctr.atomic import atomic_file, write_text
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.progress import bar as progress_bar
from llm4ctr.settings import Settings
from models import distributed
from models.checkpoint import BEST_WEIGHTS, MODEL_CONFIG, restore, save_weights
from models.ctr import CTRModel, build_model
from models.distributed import DEVICES, Processes, autocast, derive_seed, epoch_rows, process_group
from models.metrics import auc, logloss

log = logging.getLogger(__name__)

STATE = "state.pt"
HISTORY = "history.json"


@dataclass
class TrainConfig(Settings):
    """Optimisation and runtime settings (the ``train`` section of params.yaml).

    ``batch_size`` is global: under DDP each of the W ranks takes ``batch_size // W`` rows per step.
    ``accumulate``: forward passes per optimizer step, each over ``batch_size / accumulate`` rows (the
    memory of a smaller batch, the gradient of the whole one). ``amp``: mixed precision on CUDA (bf16
    where supported, else fp16 with loss scaling); ignored on CPU. ``num_threads``: CPU intra-op threads,
    0 keeps torch's default. ``deterministic`` asks torch for deterministic kernels (always true on CPU;
    on CUDA it trades some speed).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 1024
    eval_batch_size: int = 8192
    max_epochs: int = 3
    patience: int = 2
    seed: int = 2024
    device: str = "auto"
    accumulate: int = 1
    amp: bool = True
    num_threads: int = 0
    deterministic: bool = True
    progress: bool = True

    SECTION = "train"

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ParamsError(f"train.device: expected one of {DEVICES}, got {self.device!r}")
        self.require_positive("batch_size", "eval_batch_size", "max_epochs", "patience", "accumulate")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ParamsError(f"train.lr must be > 0 and train.weight_decay >= 0, got {self.lr}, {self.weight_decay}")


@dataclass
class FitResult:
    """What training achieved: the best epoch by validation AUC and the full per-epoch history."""

    best_epoch: int
    best_auc: float
    best_logloss: float
    epochs: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------- saving and loading models
def save_model(model: CTRModel, directory: str | Path) -> None:
    """Write ``model.json`` (name, vocab_sizes, hparams) and ``model.safetensors`` into ``directory``."""
    directory = Path(directory)
    write_text(directory / MODEL_CONFIG, json.dumps(_build_config(model), indent=2))
    save_weights(model, directory / BEST_WEIGHTS)


def load_model(directory: str | Path, map_location: str = "cpu") -> CTRModel:
    """Rebuild the zoo model saved in ``directory`` (by :func:`save_model` or a Trainer), in eval mode."""
    return restore(directory, lambda rec: build_model(rec["name"], rec["vocab_sizes"], **rec["hparams"]), map_location)


def _build_config(model: nn.Module) -> dict:
    try:
        return model.build_config
    except AttributeError:
        raise TypeError("save needs a model made by models.ctr.build_model (it records name and hparams)") from None


def _model_identity(model: nn.Module) -> dict:
    """What a checkpoint records to refuse resuming into another model: the build config, else the class."""
    return getattr(model, "build_config", None) or {"name": type(model).__qualname__}


# ---------------------------------------------------------------------- the trainer
class Trainer:
    """Fits one model; see the module docstring for batching, seeding, checkpoints and DDP.

    Any ``nn.Module`` whose ``forward(batch)`` returns ``{"logit": [B]}`` (plus an optional scalar
    ``"aux_loss"`` added to the BCE loss) can be trained; models from ``build_model`` also get a
    ``model.json`` so that :func:`load_model` can rebuild them from the checkpoint directory.
    """

    def __init__(self, model: nn.Module, config: TrainConfig | None = None):
        self.config = config or TrainConfig()
        self.processes = Processes.from_env()
        self.world, self.rank, self.is_main = self.processes.world, self.processes.rank, self.processes.is_main
        self.device = self.processes.device(self.config.device)
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        self.model = model.to(self.device)
        self.amp_dtype = distributed.amp_dtype(self.device, self.config.amp)

    # ------------------------------------------------------------------ public API
    def fit(
        self,
        train_arrays: dict[str, np.ndarray],
        valid_arrays: dict[str, np.ndarray],
        ckpt_dir: str | Path,
        resume: bool = True,
    ) -> FitResult:
        """Train until early stopping or ``max_epochs``; the model ends with the best weights.

        With ``resume`` and a ``state.pt`` in ``ckpt_dir`` training continues after the last finished
        epoch (a finished run returns at once); without ``resume`` an old state is discarded.
        """
        cfg = self.config
        train = to_tensors(train_arrays, "train", self.device)
        valid = to_tensors(valid_arrays, "valid", torch.device("cpu"))
        if np.unique(valid_arrays["label"]).size < 2:
            raise DataError("valid: labels hold a single class, so validation AUC is undefined")
        self.processes.check_batch(cfg.batch_size, "train.batch_size")
        with process_group(), _deterministic(cfg.deterministic):
            state = self._fit(train, valid, Path(ckpt_dir), resume)
        return _result(state)

    def _fit(
        self, train: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], ckpt_dir: Path, resume: bool
    ) -> dict:
        """The epoch loop; returns the final state (rank 0's, on every rank)."""
        cfg = self.config
        net = self.processes.wrap(self.model, self.device)
        # a model with parts at other rates (ClickPrompt's PLM encoder) says so through param_groups(lr)
        groups = self.model.param_groups(cfg.lr) if hasattr(self.model, "param_groups") else self.model.parameters()
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        state = self._start_state(ckpt_dir, resume, optimizer, scaler)
        epochs = range(state["epoch"] + 1, cfg.max_epochs + 1)
        bar = progress_bar(
            epochs, enabled=cfg.progress and self.is_main, desc="epochs", initial=state["epoch"], total=cfg.max_epochs
        )
        for epoch in bar:
            if state["stopped_early"]:
                break
            started = time.perf_counter()
            loss = self._train_epoch(net, optimizer, scaler, train, epoch)
            if self.is_main:
                self._end_epoch(state, epoch, loss, valid, time.perf_counter() - started, optimizer, scaler, ckpt_dir)
                bar.set_postfix(auc=f"{state['history'][-1]['valid_auc']:.4f}", best=f"{state['best_auc']:.4f}")
            state = self.processes.broadcast(state)  # all stop together and return one result
        bar.close()
        self.processes.barrier()
        self.model.load_state_dict(load_file(ckpt_dir / BEST_WEIGHTS, device=str(self.device)))
        return state

    @torch.inference_mode()
    def predict(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Click probabilities for every row of ``arrays`` (labels, if present, are ignored)."""
        tensors = to_tensors(arrays, "predict", torch.device("cpu"), need_label=False)
        return self._predict_tensors(tensors)

    def evaluate(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """AUC and LogLoss of the current model on labelled ``arrays``."""
        probs = self.predict(arrays)
        return {"auc": auc(arrays["label"], probs), "logloss": logloss(arrays["label"], probs)}

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, net: nn.Module, optimizer, scaler, train: dict[str, torch.Tensor], epoch: int) -> float:
        """One pass over this rank's shard of the epoch permutation; returns the mean training loss."""
        cfg = self.config
        torch.manual_seed(derive_seed(cfg.seed, epoch, 1, self.rank))  # dropout and friends
        rows = epoch_rows(len(train["label"]), cfg.seed, epoch, self.rank, self.world).to(self.device)
        step = cfg.batch_size // self.world
        micro = -(-step // cfg.accumulate)  # rows per forward pass; their gradients add up to the step's
        net.train()
        total = torch.zeros((), device=self.device)
        starts = range(0, len(rows), step)
        for start in progress_bar(starts, enabled=cfg.progress and self.is_main, desc=f"epoch {epoch}", leave=False):
            picked = rows[start : start + step]
            parts = picked.split(micro)
            optimizer.zero_grad(set_to_none=True)
            for k, part in enumerate(parts):
                batch = {name: v.index_select(0, part) for name, v in train.items()}
                # DDP averages the gradients over the ranks once per step, at its last part
                sync = k == len(parts) - 1 or self.world == 1
                with autocast(self.device, self.amp_dtype), nullcontext() if sync else net.no_sync():
                    out = net(batch)
                    loss = F.binary_cross_entropy_with_logits(out["logit"].float(), batch["label"])
                    if "aux_loss" in out:
                        loss = loss + out["aux_loss"]
                    scaler.scale(loss * (len(part) / len(picked))).backward()
                total += loss.detach() * len(part)
            scaler.step(optimizer)
            scaler.update()
        return self.processes.total(float(total), self.device) / (len(rows) * self.world)  # over every rank

    def _end_epoch(
        self,
        state: dict,
        epoch: int,
        train_loss: float,
        valid: dict[str, torch.Tensor],
        seconds: float,
        optimizer,
        scaler,
        ckpt_dir: Path,
    ) -> None:
        """Rank 0: evaluate, update early-stopping counters, write checkpoints (best first, then state)."""
        probs = self._predict_tensors(valid)
        labels = valid["label"].numpy()
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_auc": auc(labels, probs),
            "valid_logloss": logloss(labels, probs),
            "seconds": round(seconds, 3),
        }
        state["history"].append(row)
        if row["valid_auc"] > state["best_auc"]:
            state.update(best_auc=row["valid_auc"], best_logloss=row["valid_logloss"], best_epoch=epoch, bad_epochs=0)
            save_weights(self.model, ckpt_dir / BEST_WEIGHTS)
        else:
            state["bad_epochs"] += 1
        state["stopped_early"] = state["bad_epochs"] >= self.config.patience
        state["epoch"] = epoch
        self._write_state(ckpt_dir, state, optimizer, scaler)
        log.info(
            "epoch %d: train loss %.5f, valid AUC %.5f, logloss %.5f (%.1fs)",
            epoch,
            train_loss,
            row["valid_auc"],
            row["valid_logloss"],
            seconds,
        )

    # ------------------------------------------------------------------ checkpoints
    def _start_state(self, ckpt_dir: Path, resume: bool, optimizer, scaler) -> dict:
        """Load the saved state when resuming (weights and optimizer too), else start fresh."""
        config = _model_identity(self.model)
        path = ckpt_dir / STATE
        if resume and path.exists():
            saved = torch.load(path, map_location=self.device, weights_only=True)
            if saved["model_config"] != config:
                raise ParamsError(
                    f"{path}: checkpoint was written for model {saved['model_config']['name']} with "
                    "other hyper-parameters or vocabularies; delete it or train with resume=False"
                )
            self.model.load_state_dict(saved.pop("model"))
            optimizer.load_state_dict(saved.pop("optimizer"))
            scaler.load_state_dict(saved.pop("scaler"))
            log.info("resuming %s after epoch %d", ckpt_dir, saved["epoch"])
            return saved
        self.processes.barrier()  # nobody may still be reading an old state we are about to replace
        if self.is_main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            for name in (STATE, BEST_WEIGHTS, HISTORY, MODEL_CONFIG):
                (ckpt_dir / name).unlink(missing_ok=True)
            if hasattr(self.model, "build_config"):
                write_text(ckpt_dir / MODEL_CONFIG, json.dumps(config, indent=2))
        return {
            "model_config": config,
            "epoch": 0,
            "best_auc": float("-inf"),
            "best_logloss": float("nan"),
            "best_epoch": 0,
            "bad_epochs": 0,
            "stopped_early": False,
            "history": [],
        }

    def _write_state(self, ckpt_dir: Path, state: dict, optimizer, scaler) -> None:
        """Persist everything resuming needs; ``state.pt`` is replaced atomically."""
        payload = {
            **state,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "train_config": asdict(self.config),
        }
        with atomic_file(ckpt_dir / STATE) as tmp:
            torch.save(payload, tmp)
        write_text(ckpt_dir / HISTORY, json.dumps(state["history"], indent=2))

    # ------------------------------------------------------------------ helpers
    @torch.inference_mode()
    def _predict_tensors(self, tensors: dict[str, torch.Tensor]) -> np.ndarray:
        self.model.eval()
        n = len(next(iter(tensors.values())))
        size = self.config.eval_batch_size
        chunks = []
        for start in range(0, n, size):
            batch = {k: v[start : start + size].to(self.device, non_blocking=True) for k, v in tensors.items()}
            with autocast(self.device, self.amp_dtype):
                chunks.append(torch.sigmoid(self.model(batch)["logit"].float()).cpu())
        return torch.cat(chunks).numpy().astype(np.float64) if chunks else np.zeros(0)


@contextmanager
def _deterministic(enabled: bool):
    """Ask torch for deterministic kernels while training, then restore the caller's setting."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def to_tensors(
    arrays: dict[str, np.ndarray], what: str, device: torch.device, need_label: bool = True
) -> dict[str, torch.Tensor]:
    """Field arrays -> int64 tensors, ``dense``/``label`` -> float32, all on ``device``; checks lengths."""
    if need_label and "label" not in arrays:
        raise DataError(f"{what}: arrays have no 'label' (got {sorted(arrays)})")
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{what}: arrays differ in length: {lengths}")
    tensors = {}
    for key, value in arrays.items():
        if key == "label" and not need_label:
            continue
        dtype = torch.float32 if key in ("label", "dense") else torch.int64
        tensors[key] = torch.as_tensor(np.asarray(value), dtype=dtype).to(device)
    return tensors


def _result(state: dict) -> FitResult:
    return FitResult(
        best_epoch=state["best_epoch"],
        best_auc=state["best_auc"],
        best_logloss=state["best_logloss"],
        epochs=state["epoch"],
        stopped_early=state["stopped_early"],
        history=list(state["history"]),
    )
