"""One way for every loop to run on any device and any number of processes: torchrun's environment,
the process group, the device of this rank, seeded shards of each epoch, mixed precision.

Used by the CTR trainer, PA-MLM pre-training, the LEARN tower loop, the hidden-state passes and the
PALR stages (profiles, LoRA finetuning, listwise and pointwise scoring).
Accelerate would give the same DDP wrapping, but its ``prepare`` expects DataLoaders, while these loops
gather batches from pre-built tensors by a seeded permutation (the cheapest batching on a CPU and what
makes a killed run resume bit for bit); so they share this small module instead.

The contract every loop keeps under ``torchrun --nproc_per_node W``:

* one global step sees the rows a single process would see: the epoch permutation is padded to a
  multiple of W (as DistributedSampler does) and rank r takes ``perm[r::W]`` (:func:`epoch_rows`), or
  the r-th strided part of each global batch (:meth:`Processes.part`);
* random draws that must not depend on W (masks, shuffles) come from seeds derived from the run's seed
  and the step (:func:`derive_seed`), drawn for the whole global batch on every rank;
* rank 0 alone evaluates and writes; the others wait at :meth:`Processes.barrier` and take rank 0's
  decisions through :meth:`Processes.broadcast`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from llm4ctr.errors import ParamsError

DEVICES = ("auto", "cpu", "cuda")
MAPPED = "map"  # a device value of the LLM passes: one model spread over every GPU, then the CPU (Accelerate)


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes (rank, world size, torchrun's LOCAL_RANK)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Processes:
        """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), one process without it."""
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, logs and writes."""
        return self.rank == 0

    def device(self, name: str, key: str = "train.device", mappable: bool = False) -> torch.device:
        """``name`` (auto | cpu | cuda | cuda:N, from params ``key``) -> this process's device; auto and cuda
        mean this rank's GPU (LOCAL_RANK) under torchrun. ``map``, when ``mappable`` (a frozen model too
        large for one device, see :func:`load_pretrained`), gives the device its inputs start on."""
        if name == MAPPED and mappable:
            if self.world > 1:
                raise ParamsError(f"{key}: {MAPPED} spreads one model over every GPU; run it in one process")
            return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        if name not in DEVICES and not re.fullmatch(r"cuda:\d+", str(name)):
            raise ParamsError(f"{key}: expected one of {DEVICES} or cuda:N, got {name!r}")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ParamsError(f"{key} is {name!r} but no CUDA device is available (use 'auto' or 'cpu')")
        if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        return torch.device(name) if ":" in name else torch.device("cuda", self.local_rank)

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for in one process)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if self.world <= 1:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def total(self, value: float, device: torch.device) -> float:
        """The sum of ``value`` over the ranks."""
        if self.world <= 1:
            return float(value)
        tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a picklable object), in rank order, on every rank."""
        if self.world <= 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def average_gradients(self, parameters) -> None:
        """Each parameter's gradient averaged over the ranks (what DDP does, for loops that call the
        model through something other than its forward: a gathered loss, a decoder of a wrapped LM)."""
        if self.world <= 1:
            return
        for param in parameters:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world

    def wrap(self, model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
        """``model`` in DDP when there are several ranks (gradients averaged over them), else itself.
        ``find_unused``: some trainable parameters take no part in the loss (a PLM's pooler under MLM)."""
        if self.world <= 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        # buffers are constants (index tables) or BatchNorm statistics; rank 0's are the ones saved
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=find_unused
        )

    def part(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's strided share ``rows[rank::world]`` of a global batch."""
        return rows[self.rank :: self.world]

    def check_batch(self, batch_size: int, key: str) -> None:
        """A global batch must give every rank at least one row."""
        if batch_size < self.world:
            raise ParamsError(f"{key} {batch_size} is smaller than the {self.world} processes")


@contextlib.contextmanager
def process_group(timeout: timedelta | None = None) -> Iterator[Processes]:
    """Join torchrun's process group for the duration, when there is one to join and nobody joined it
    yet (the stage command joins it once for a whole stage); yields this process's :class:`Processes`.
    CPU tensors travel over gloo, CUDA tensors over NCCL (each rank on its LOCAL_RANK GPU)."""
    processes = Processes.from_env()
    created = processes.world > 1 and not dist.is_initialized()
    if created:
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(processes.local_rank)
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", **({"timeout": timeout} if timeout else {}))
    try:
        yield processes
    finally:
        if created:
            dist.destroy_process_group()


def load_pretrained(auto_class, path: str, dtype: torch.dtype, device: torch.device, mapped: bool) -> nn.Module:
    """``auto_class.from_pretrained(path)`` frozen in eval mode on ``device``; with ``mapped`` (the device
    value ``map``) its layers are spread over the GPUs, then the CPU, by Accelerate's ``device_map="auto"``
    (inputs go to ``model.device``, the first layer's)."""
    placed = {"device_map": "auto"} if mapped else {}
    model = auto_class.from_pretrained(path, dtype=dtype, **placed)
    if not mapped:
        model = model.to(device)
    model.requires_grad_(False)
    return model.eval()


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (seed, epoch or step, purpose, ...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]) >> 1


def epoch_rows(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's rows for ``epoch``: a seeded permutation, padded by wrap-around to a multiple of
    ``world`` (as DistributedSampler does), then strided ``perm[rank::world]``."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 0))
    perm = torch.randperm(n, generator=generator)
    padding = (-n) % world
    if padding:
        perm = torch.cat([perm, perm[:padding]])
    return perm[rank::world]


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype on CUDA (bf16 where supported, else fp16), None on the CPU or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in ``dtype`` on ``device`` (see :func:`amp_dtype`), a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
