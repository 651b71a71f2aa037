"""Multi-scenario recommendation: six backbones, three enhancements (DN, EP, LLM4MSR), one builder.

``build_msr("star_ours", encoder.vocab_sizes, backbone_params=..., enhancement_params=...)``; see
``models/msr/model.py`` for variant names and ``models/msr/base.py`` for how the pieces fit.
"""

from models.msr.llm4msr import LLM4MSR, MetaLayers, StateTable
from models.msr.model import (
    BACKBONES,
    ENHANCEMENTS,
    MultiScenarioModel,
    all_variants,
    build_msr,
    load_msr,
    parse_variant,
    variant_name,
)

__all__ = [
    "BACKBONES",
    "ENHANCEMENTS",
    "LLM4MSR",
    "MetaLayers",
    "MultiScenarioModel",
    "StateTable",
    "all_variants",
    "build_msr",
    "load_msr",
    "parse_variant",
    "variant_name",
]
