"""The PA-MLM pre-training loop: AdamW, linear warm-up then linear decay, resumable every N steps.

PA-MLM has no CTR label, so :class:`models.trainer.Trainer` (which fits a logit to a label, with
validation AUC and early stopping) does not fit; this loop is its small sibling and borrows its
seeding: epoch ``e``'s row order and step ``s``'s dropout and masking draws are derived from
``(seed, e)`` and ``(seed, s)``, so a run killed at any checkpoint resumes exactly where the
uninterrupted run would be (bit for bit on CPU).

Checkpoint (``work_dir/state.pt``, replaced atomically every ``checkpoint_every`` steps and at the end):
weights, optimizer, scheduler, step, loss history and the settings it was made with; resuming with
other settings or another network raises instead of mixing two runs.

Under torchrun (models.distributed) every rank takes the same global batch, masks it with the step's
generator, and trains on its strided share; each share's summed loss is divided by the global masked
count over the ranks, so DDP's gradient average is the one-process gradient. Only dropout is drawn per
rank. Rank 0 writes the checkpoints. On CUDA the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from llm4ctr.atomic import atomic_file
from llm4ctr.errors import ParamsError
from llm4ctr.progress import bar as progress_bar
from llm4ctr.settings import RUNTIME_KEYS, Settings
from models.clickprompt.pamlm import IGNORE, PAMLM
from models.distributed import Processes, amp_dtype, autocast, derive_seed, epoch_rows, process_group
from models.trainer import to_tensors

log = logging.getLogger(__name__)

STATE = "state.pt"


@dataclass
class PretrainConfig(Settings):
    """PA-MLM settings (params.yaml ``clickprompt.pretrain``).

    ``new_lr``: CTR model, prompt generator and freshly initialised MLM-head parts; ``plm_lr``: the
    pretrained PLM weights. ``epochs`` passes over the texts, cut at ``max_steps`` when > 0 (the short
    default profile). ``warmup``: share of the steps with a linearly rising learning rate.
    ``accumulate``: forward passes per step, each over a part of the batch (the gradient of the whole).
    ``stop_at`` > 0 pauses the run after that step without changing its schedule: the weights so far
    can be used (PA-MLM over the first ``stop_at * batch_size`` texts of the permutation) and a later
    call with a larger ``stop_at`` (or 0) continues the same run from its checkpoint.
    """

    new_lr: float = 1e-3
    plm_lr: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 64
    epochs: int = 1
    max_steps: int = 0
    warmup: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 2024
    device: str = "auto"
    accumulate: int = 1
    num_threads: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    stop_at: int = 0
    progress: bool = True

    SECTION = "clickprompt.pretrain"

    def __post_init__(self):
        self.require_positive("batch_size", "epochs", "checkpoint_every", "log_every", "accumulate")
        if not 0 <= self.warmup < 1:
            raise ParamsError(f"clickprompt.pretrain.warmup: expected a share in [0, 1), got {self.warmup!r}")
        if self.new_lr < 0 or self.plm_lr < 0 or self.max_steps < 0 or self.stop_at < 0:
            raise ParamsError("clickprompt.pretrain: new_lr, plm_lr, max_steps and stop_at must be >= 0")


def total_steps(rows: int, config: PretrainConfig) -> int:
    """Optimizer steps of a run over ``rows`` texts."""
    steps = math.ceil(rows / config.batch_size) * config.epochs
    return min(steps, config.max_steps) if config.max_steps else steps


def pretrain(
    objective: PAMLM, arrays: dict[str, np.ndarray], work_dir: str | Path, config: PretrainConfig | None = None
) -> dict:
    """Run (or resume) PA-MLM over ``arrays`` (ID fields + input_ids + attention_mask); returns a summary.

    The objective ends in training mode with the final weights; the summary holds the step count,
    the loss history (mean loss and masked-token accuracy per ``log_every`` steps) and throughput.
    """
    config = config or PretrainConfig()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    processes = Processes.from_env()
    device = processes.device(config.device, "clickprompt.pretrain.device")
    processes.check_batch(config.batch_size, "clickprompt.pretrain.batch_size")
    objective.to(device).train()
    data = to_tensors(arrays, "pretrain", device, need_label=False)
    rows = len(data["input_ids"])
    per_epoch = math.ceil(rows / config.batch_size)
    total = total_steps(rows, config)
    warmup = int(config.warmup * total)
    end = min(total, config.stop_at) if config.stop_at else total

    optimizer = torch.optim.AdamW(objective.param_groups(config.new_lr, config.plm_lr, config.weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup)),
    )
    work_dir = Path(work_dir)
    identity = {
        "settings": {k: v for k, v in asdict(config).items() if k not in RUNTIME_KEYS},
        "rows": rows,
        "network": _network_identity(objective),
    }
    state = _start(work_dir / STATE, identity, objective, optimizer, scheduler, device)
    precision = amp_dtype(device, True)

    started, seconds_before = time.perf_counter(), state["seconds"]
    bar = progress_bar(total=end, initial=state["step"], desc="PA-MLM", enabled=config.progress and processes.is_main)
    window: list[tuple[float, float, float]] = []
    order, order_epoch = None, -1
    with process_group():
        net = processes.wrap(objective, device, find_unused=True)  # the PLM's pooler has no MLM loss
        for step in range(state["step"], end):
            epoch, position = divmod(step, per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_rows(rows, config.seed, epoch + 1).to(device), epoch
            picked = order[position * config.batch_size : (position + 1) * config.batch_size]
            draws = torch.Generator(device=device).manual_seed(derive_seed(config.seed, step, 3))  # masking
            masked = objective.mask({key: value.index_select(0, picked) for key, value in data.items()}, draws)
            # every rank a share (a last batch smaller than the ranks wraps around), in `accumulate` parts
            positions = torch.arange(len(picked), device=device).repeat(-(-processes.world // len(picked)))
            share = processes.part(positions[: max(len(picked), processes.world)])
            per = int((masked["labels"] != IGNORE).sum()) / processes.world
            dropout = (config.seed, step, 2, processes.rank) if processes.world > 1 else (config.seed, step, 2)
            torch.manual_seed(derive_seed(*dropout))
            optimizer.zero_grad(set_to_none=True)
            parts = share.split(-(-len(share) // config.accumulate))
            sums = np.zeros(3)
            for k, part in enumerate(parts):
                sync = k == len(parts) - 1 or processes.world == 1  # DDP averages once per step
                with autocast(device, precision), nullcontext() if sync else net.no_sync():
                    out = net({key: value.index_select(0, part) for key, value in masked.items()}, per=per)
                    out["loss"].backward()
                sums += (out["loss_sum"], out["correct"], out["masked"])
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(objective.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            window.append(tuple(processes.total(value, device) for value in sums))
            state["step"] = step + 1
            bar.update(1)
            if len(window) == config.log_every or state["step"] == end:
                summed = np.array(window)
                masked_steps = summed[:, 2] > 0
                loss, accuracy = (
                    (summed[masked_steps, :2] / summed[masked_steps, 2:]).mean(axis=0)
                    if masked_steps.any()
                    else (float("nan"), float("nan"))
                )
                state["history"].append(
                    {
                        "step": state["step"],
                        "loss": float(loss),
                        "accuracy": float(accuracy),
                        "lr_plm": optimizer.param_groups[-1]["lr"],
                    }
                )
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}")
                window = []
            if state["step"] % config.checkpoint_every == 0 or state["step"] == end:
                state["seconds"] = seconds_before + time.perf_counter() - started
                if processes.is_main:
                    _save(work_dir / STATE, state, objective, optimizer, scheduler)
                processes.barrier()  # a rank that dies now leaves a checkpoint every rank can resume from
                last = state["history"][-1] if state["history"] else {}
                log.info(
                    "PA-MLM step %d/%d: loss %.4f, accuracy %.4f (%.0fs)",
                    state["step"],
                    end,
                    last.get("loss", float("nan")),
                    last.get("accuracy", float("nan")),
                    state["seconds"],
                )
    bar.close()
    state["seconds"] = seconds_before + time.perf_counter() - started
    history = state["history"]
    return {
        "steps": state["step"],
        "total_steps": total,
        "rows": rows,
        "batch_size": config.batch_size,
        "samples_seen": min(state["step"] * config.batch_size, rows * config.epochs),
        "seconds": round(state["seconds"], 1),
        "samples_per_s": round(state["step"] * config.batch_size / state["seconds"], 2) if state["seconds"] else None,
        "loss_first": history[0]["loss"] if history else None,
        "loss_last": history[-1]["loss"] if history else None,
        "accuracy_last": history[-1]["accuracy"] if history else None,
        "history": history,
    }


def _network_identity(objective: PAMLM) -> dict:
    net = objective.net
    return {
        "ctr": getattr(net.ctr, "build_config", type(net.ctr).__name__),
        "plm": net.encoder.config.model_type,
        "hidden": net.hidden_size,
        "num_prompts": net.num_prompts,
        "mode": net.mode,
        "probability": objective.probability,
    }


def _start(path: Path, identity: dict, objective: PAMLM, optimizer, scheduler, device) -> dict:
    """The saved state when ``path`` exists (weights, optimizer and scheduler restored), else a fresh one."""
    if not path.exists():
        return {"identity": identity, "step": 0, "seconds": 0.0, "history": []}
    saved = torch.load(path, map_location=device, weights_only=True)
    if saved["identity"] != identity:
        raise ParamsError(
            f"{path}: this PA-MLM checkpoint was made with other settings, data or network "
            f"({saved['identity']} vs {identity}); delete it to start over"
        )
    objective.load_state_dict(saved.pop("model"))
    optimizer.load_state_dict(saved.pop("optimizer"))
    scheduler.load_state_dict(saved.pop("scheduler"))
    log.info("resuming PA-MLM from %s at step %d", path, saved["step"])
    return saved


def _save(path: Path, state: dict, objective: PAMLM, optimizer, scheduler) -> None:
    payload = {
        **state,
        "model": {k: v.detach().cpu() for k, v in objective.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
