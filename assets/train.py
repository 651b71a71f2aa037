"""Stage `train` (one instance per zoo model): train a CTR baseline for every seed and predict.

Writes artifacts/train/<dataset>/<model>/ in the layout of docs/CONTRACTS.md: predictions for valid
and test per seed, summary.json, and seed<k>/ zoo checkpoints (model.json + model.safetensors) that
serving can load. Training resumes from artifacts/.work/ after a kill.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assets.curves import Curves
from assets.features import load_encoded
from assets.registry import get_stage
from assets.runs import fit_seed, resume_key, scored, seeds, train_config, work_dir, write_variant
from llm4ctr.atomic import atomic_dir
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir

STAGE = "train"


def model_hparams(params: Params, model: str) -> dict[str, Any]:
    """params ``ctr.hparams.<model>`` (may be absent: the model's defaults apply)."""
    return dict((params.get_path("ctr.hparams", None) or {}).get(model) or {})


def run(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Train zoo model ``variant`` once per seed; write predictions, summary and checkpoints."""
    import torch

    from models.ctr import build_model

    dataset = params.get_path("data.name")
    encoder, arrays = load_encoded(root, dataset)
    hparams = model_hparams(params, variant)
    key = resume_key(params, root, STAGE, variant)
    records, per_seed = [], {}
    curves = Curves(root, STAGE, dataset, variant)
    with atomic_dir(artifact_dir(root, STAGE, dataset) / variant) as tmp:
        for seed in seeds(params):
            torch.manual_seed(seed)
            model = build_model(variant, encoder.vocab_sizes, **hparams)
            _, per_seed[seed], predictions = fit_seed(
                model,
                train_config(params, seed),
                arrays["train"],
                arrays["valid"],
                scored(arrays),
                work_dir(root, STAGE, dataset, variant, seed, key),
                tmp / f"seed{seed}",
                curves,
            )
            records += [(seed, split, p) for split, p in predictions]
        summary = {
            "variant": variant,
            "stage": STAGE,
            "hparams": hparams,
            "params_digest": params.digest(get_stage(STAGE).params),
            "seeds": per_seed,
        }
        write_variant(tmp, records, summary)
    return {"model": variant, **{f"seed{s}_valid_auc": v["valid_auc"] for s, v in per_seed.items()}}
