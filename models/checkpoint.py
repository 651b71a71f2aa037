"""The checkpoint folder every trained model shares: ``model.json`` (how to rebuild) + ``model.safetensors``.

Zoo models, multi-scenario models and the LEARN ranker all record how they were built as
``model.build_config`` = {name, vocab_sizes, hparams}; the trainer writes that record and the best
weights, and a loader rebuilds the model from them. The record is JSON-normalised (tuples become
lists) so that a record read back from disk compares equal to a freshly built one (resume checks).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from llm4ctr.atomic import save_tensors
from llm4ctr.errors import DataError

MODEL_CONFIG = "model.json"
BEST_WEIGHTS = "model.safetensors"


def build_record(name: str, vocab_sizes: dict[str, int], hparams: dict) -> dict:
    """The ``build_config`` of a model: its name, vocabulary sizes and hyper-parameters, JSON-normalised."""
    sizes = {field: int(size) for field, size in vocab_sizes.items()}
    return json.loads(json.dumps({"name": name, "vocab_sizes": sizes, "hparams": hparams}))


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write the model's state dict (on CPU) as safetensors, atomically."""
    save_tensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)


def restore(
    directory: str | Path, build: Callable[[dict], nn.Module], map_location: str = "cpu", expect_name: str | None = None
) -> nn.Module:
    """Rebuild a model from ``directory``: ``build(record)`` makes it, the saved weights fill it; eval mode.

    A missing file or (with ``expect_name``) a record of another model raises DataError naming the path.
    """
    directory = Path(directory)
    try:
        record = json.loads((directory / MODEL_CONFIG).read_text(encoding="utf-8"))
        weights: dict[str, torch.Tensor] = load_file(directory / BEST_WEIGHTS, device=map_location)
    except FileNotFoundError as exc:
        raise DataError(f"{directory}: not a model checkpoint ({exc.filename} missing)") from None
    if expect_name is not None and record.get("name") != expect_name:
        raise DataError(f"{directory / MODEL_CONFIG}: model '{record.get('name')}' is not a {expect_name}")
    model = build(record)
    model.load_state_dict(weights)
    return model.to(map_location).eval()
