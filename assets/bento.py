"""Stage `bento`: register the chosen CTR-only checkpoint and its fitted encoder in the BentoML model store.

Which checkpoint: ``artifacts/<serve.stage>/<dataset>/<serve.variant>/seed<k>/`` (the zoo format of
docs/CONTRACTS.md: model.json + model.safetensors), ``k`` = ``serve.seed`` or, when null, the seed
with the best validation AUC in the variant's summary.json. The encoder is the features stage's
``encoder.json``. The ClickPrompt w/o-PLM checkpoint has the same format: serving it is
``serve.stage: clickprompt, serve.variant: clickprompt_wo_plm``.

Writes artifacts/bento/<dataset>/: ``model/`` (the three files the service loads, exactly what was
registered), ``model_card.md`` (assets/model_card.py) and ``registration.json`` (tag, labels,
metadata). The BentoML model ``<serve.model_name>:<version>`` gets the same files and the card; the
version is a digest of the model files, so the same checkpoint always gets the same version. Labels
carry dataset, variant, seed and lineage (the params digest the checkpoint was trained under, the
data.dvc md5); metadata carries the metrics and the record fields (which shape the service's request
schema). How the model is served (workers, batching, limits) is not part of it: the service reads
those settings when it starts (serving/settings.py). The store is ``$BENTOML_HOME/models`` (default:
``<root>/bentoml_home``, what ``make serve`` uses); registration runs through assets/bento_store.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from assets.bento_store import FILES, MODEL_CARD, MODEL_DIR, REGISTRATION, files_digest, register_in
from assets.model_card import METRICS, over_seeds, render, seed_figures
from assets.runs import SUMMARY
from assets.tables import read_json, write_json
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir, portable

STAGE = "bento"
DEFAULT_HOME = "bentoml_home"


def bentoml_home(root: Path) -> Path:
    """$BENTOML_HOME, else ``<root>/bentoml_home``."""
    return Path(os.environ.get("BENTOML_HOME") or Path(root) / DEFAULT_HOME)


def chosen_checkpoint(params: Params, root: Path) -> tuple[Path, int, dict[str, Any]]:
    """(checkpoint folder, seed, the variant's summary.json) for the ``serve`` choice."""
    dataset = params.get_path("data.name")
    stage, variant = params.get_path("serve.stage"), params.get_path("serve.variant")
    folder = artifact_dir(root, stage, dataset) / variant
    summary = read_json(folder / SUMMARY)
    seeds = {int(k): v for k, v in summary.get("seeds", {}).items()}
    if not seeds:
        raise DataError(f"{folder / SUMMARY}: lists no trained seeds")
    seed = params.get_path("serve.seed", None)
    if seed is None:
        seed = max(seeds, key=lambda s: seeds[s]["valid_auc"])
    elif int(seed) not in seeds:
        raise ParamsError(f"serve.seed: {seed} was not trained for {stage}/{variant}; trained seeds: {sorted(seeds)}")
    checkpoint = folder / f"seed{int(seed)}"
    missing = [name for name in FILES[:2] if not (checkpoint / name).is_file()]
    if missing:
        raise DataError(f"{checkpoint}: checkpoint lacks {missing}; re-run the {stage} stage")
    return checkpoint, int(seed), summary


def data_version(root: Path) -> str:
    """The md5 that data.dvc records for the raw data ('unknown' when the file is absent)."""
    path = Path(root) / "data.dvc"
    if not path.is_file():
        return "unknown"
    outs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))


def seed_rule(params: Params, summary: dict[str, Any], seed: int) -> str:
    """How the served seed was chosen, for the model card."""
    if params.get_path("serve.seed", None) is not None:
        return "set by serve.seed"
    n = len(summary["seeds"])
    return (
        f"serve.seed is null, so the seed with the best validation AUC "
        f"({summary['seeds'][str(seed)]['valid_auc']:.4f}) of the {n} trained seed{'s' if n > 1 else ''}"
    )


def run(params: Params, root: Path) -> dict[str, Any]:
    """Copy the chosen checkpoint + encoder into artifacts/bento/<ds>/model/, write the model card, register them."""
    from models.features import FeatureEncoder

    root = Path(root)
    dataset = params.get_path("data.name")
    stage, variant = params.get_path("serve.stage"), params.get_path("serve.variant")
    checkpoint, seed, summary = chosen_checkpoint(params, root)
    encoder_dir = artifact_dir(root, "features", dataset)
    encoder = FeatureEncoder.load(encoder_dir)
    split_dir = artifact_dir(root, "split", dataset)
    longtail_share = float(params.get_path("evaluate.longtail_share"))
    figures = seed_figures(checkpoint.parent, split_dir, longtail_share)
    if seed not in figures:
        raise DataError(f"{checkpoint.parent}: predictions.parquet has no predictions of the served seed {seed}")
    metrics = {key: figures[seed][key] for key in METRICS}
    across = over_seeds(figures)
    lineage = {
        "params_digest": str(summary.get("params_digest", params.digest())),
        "data_md5": data_version(root),
        "checkpoint": portable(checkpoint, root),
    }
    fields = [{"name": f.name, "kind": f.kind} for f in encoder.spec.fields]
    metadata = {
        "dataset": dataset,
        "stage": stage,
        "variant": variant,
        "seed": seed,
        "metrics": metrics,
        "metrics_over_seeds": {key: across[key] for key in ("seeds", *METRICS)},
        "lineage": lineage,
        "fields": fields,
    }
    labels = {
        "dataset": dataset,
        "stage": str(stage),
        "variant": str(variant),
        "seed": str(seed),
        "params_digest": lineage["params_digest"],
        "data_md5": lineage["data_md5"],
    }
    home = bentoml_home(root)
    out_dir = artifact_dir(root, STAGE, dataset)
    with atomic_dir(out_dir) as tmp:
        model_dir = tmp / MODEL_DIR
        model_dir.mkdir()
        for name in FILES[:2]:
            shutil.copy2(checkpoint / name, model_dir / name)
        shutil.copy2(encoder_dir / FILES[2], model_dir / FILES[2])
        tag = f"{params.get_path('serve.model_name')}:{files_digest(model_dir)}"
        model = read_json(checkpoint / "model.json")
        card = render(
            {
                **metadata,
                "tag": tag,
                "seed_rule": seed_rule(params, summary, seed),
                "checkpoint": lineage["checkpoint"],
                "architecture": model["name"] + (f" {model['hparams']}" if model.get("hparams") else ""),
                "split": read_json(split_dir / "summary.json"),
                "label_rule": params.get_path(f"data.label_rules.{dataset}"),
                "longtail_share": longtail_share,
                "figures": figures,
                "summary": across,
            }
        )
        (tmp / MODEL_CARD).write_text(card, encoding="utf-8")
        write_json({"tag": tag, "labels": labels, **metadata}, tmp / REGISTRATION)
        register_in(tmp, home)  # inside: a failed registration leaves the previous outputs in place
    return {
        "tag": tag,
        "variant": variant,
        "seed": seed,
        **metrics,
        **{f"{key}_{stat}": across[key][stat] for key in ("valid_auc", "test_auc") for stat in ("mean", "std")},
        **lineage,
        "store": str(home / "models"),
        "model_card_md": card,
        "model_card_file_path": portable(out_dir / MODEL_CARD, root),
    }


def registered_model_dir(root: Path, dataset: str) -> Path:
    """artifacts/bento/<ds>/model/: the files of the registered model (what the service scores with)."""
    folder = artifact_dir(root, STAGE, dataset) / MODEL_DIR
    if not (folder / FILES[0]).is_file():
        raise DataError(f"{folder}: no registered model; run the bento stage first (`llm4ctr stage bento`)")
    return folder
