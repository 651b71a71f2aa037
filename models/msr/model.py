"""The multi-scenario model and its registry: ``build_msr("star_ours", encoder.vocab_sizes)``.

A variant name is ``<backbone>`` (plain) or ``<backbone>_<enhancement>`` with enhancement ``dn``,
``ep`` or ``ours`` — the lower-case names of the result tables (``star``, ``star_dn``, ``star_ep``,
``star_ours``). Models built here remember how (``model.build_config``), so the trainer writes a
``model.json`` next to the weights and :func:`load_msr` rebuilds the model from a checkpoint folder;
the LLM states of ``_ours`` are buffers and come back with the weights.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from llm4ctr.errors import DataError, ParamsError
from models.checkpoint import build_record, restore
from models.features import FIRST_ID
from models.layers import FeatureEmbedding
from models.msr.aitm import AITM
from models.msr.base import Backbone, Enhancement, Plain
from models.msr.dynamic_network import DynamicNetwork
from models.msr.epnet import EPNet
from models.msr.llm4msr import LLM4MSR
from models.msr.mmoe import MMoE
from models.msr.omoe import OMoE
from models.msr.ple import PLE
from models.msr.shared_bottom import SharedBottom
from models.msr.star import STAR

BACKBONES: dict[str, type[Backbone]] = {
    "shared_bottom": SharedBottom, "mmoe": MMoE, "omoe": OMoE, "ple": PLE, "star": STAR, "aitm": AITM,
}  # fmt: skip
ENHANCEMENTS: dict[str, type[Enhancement]] = {"plain": Plain, "dn": DynamicNetwork, "ep": EPNet, "ours": LLM4MSR}


def variant_name(backbone: str, enhancement: str = "plain") -> str:
    """``("star", "ours")`` -> ``"star_ours"``; the plain enhancement adds no suffix."""
    return backbone if enhancement == "plain" else f"{backbone}_{enhancement}"


def parse_variant(variant: str) -> tuple[str, str]:
    """``"star_ours"`` -> ``("star", "ours")``; ``"shared_bottom"`` -> ``("shared_bottom", "plain")``."""
    name = variant.lower()
    for enhancement in ENHANCEMENTS:
        backbone = name.removesuffix(f"_{enhancement}")
        if backbone != name and backbone in BACKBONES:
            return backbone, enhancement
    if name in BACKBONES:
        return name, "plain"
    raise ParamsError(
        f"unknown multi-scenario variant '{variant}'; choose <backbone>[_dn|_ep|_ours] with backbone "
        f"one of {sorted(BACKBONES)}"
    )


def all_variants() -> list[str]:
    """Every backbone x enhancement, in table order (backbone, _dn, _ep, _ours per backbone)."""
    return [variant_name(b, e) for b in BACKBONES for e in ENHANCEMENTS]


def _checked(cls: type, given: dict, what: str, fixed: int) -> dict:
    """``given`` after checking its keys against ``cls``'s constructor (its first ``fixed`` args are not hparams)."""
    allowed = list(inspect.signature(cls).parameters)[fixed:]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ParamsError(f"{what}: unknown hyper-parameter(s) {unknown}; valid: {sorted(allowed)}")
    return dict(given)


class MultiScenarioModel(nn.Module):
    """Field embeddings -> enhancement -> backbone, routed by the ``scenario_field`` of every row.

    The scenario index of a row is its encoded scenario id minus ``FIRST_ID`` (0 .. S-1, S = the
    scenarios seen in training); an unseen scenario (the OOV id) has no path, so the training stage
    refuses data that holds one. ``forward(batch) -> {"logit": [B]}``.
    """

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        backbone: str = "star",
        enhancement: str = "plain",
        embedding_dim: int = 16,
        scenario_field: str = "scenario",
        backbone_params: dict | None = None,
        enhancement_params: dict | None = None,
    ):
        super().__init__()
        if scenario_field not in vocab_sizes:
            raise ParamsError(f"scenario_field '{scenario_field}' is not a feature field (fields: {list(vocab_sizes)})")
        self.num_scenarios = vocab_sizes[scenario_field] - FIRST_ID
        if self.num_scenarios < 1:
            raise DataError(f"field '{scenario_field}' has no scenario values in the training vocabulary")
        if backbone not in BACKBONES or enhancement not in ENHANCEMENTS:
            raise ParamsError(
                f"unknown backbone '{backbone}' or enhancement '{enhancement}'; backbones: "
                f"{sorted(BACKBONES)}, enhancements: {sorted(ENHANCEMENTS)}"
            )
        self.scenario_field = scenario_field
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim)
        enhancement_cls, backbone_cls = ENHANCEMENTS[enhancement], BACKBONES[backbone]
        self.enhancement = enhancement_cls(
            vocab_sizes,
            embedding_dim,
            self.num_scenarios,
            **_checked(enhancement_cls, enhancement_params or {}, enhancement, 3),
        )
        self.backbone = backbone_cls(
            self.enhancement.output_dim,
            self.num_scenarios,
            **_checked(backbone_cls, backbone_params or {}, backbone, 2),
        )

    def scenario_index(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B] scenario index 0 .. S-1 of every row."""
        return batch[self.scenario_field] - FIRST_ID

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        emb = self.embedding(batch)
        return {"logit": self.enhancement(emb, batch, self.scenario_index(batch), self.backbone)}


def build_msr(
    variant: str,
    vocab_sizes: dict[str, int],
    embedding_dim: int = 16,
    scenario_field: str = "scenario",
    backbone_params: dict | None = None,
    enhancement_params: dict | None = None,
) -> MultiScenarioModel:
    """The model of ``variant`` (e.g. ``"star_ours"``) for an encoder's ``vocab_sizes``, remembering its build."""
    backbone, enhancement = parse_variant(variant)
    hparams = {
        "embedding_dim": embedding_dim,
        "scenario_field": scenario_field,
        "backbone_params": backbone_params or {},
        "enhancement_params": enhancement_params or {},
    }
    model = MultiScenarioModel(vocab_sizes, backbone, enhancement, **hparams)
    model.build_config = build_record(variant_name(backbone, enhancement), vocab_sizes, hparams)
    return model


def load_msr(directory: str | Path, map_location: str = "cpu") -> MultiScenarioModel:
    """Rebuild the model a trainer checkpointed into ``directory`` (weights and LLM states), in eval mode."""
    return restore(directory, lambda rec: build_msr(rec["name"], rec["vocab_sizes"], **rec["hparams"]), map_location)
