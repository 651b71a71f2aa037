"""Stages `clickprompt_pretrain` and `clickprompt`: ClickPrompt's PA-MLM pre-training and finetuning.

`clickprompt_pretrain` (one instance per ``clickprompt.pretrain.variants``) trains the CTR model, the
prompt generator and the PLM jointly with PA-MLM on the training texts and writes a ClickPrompt
checkpoint (models/clickprompt/network.py layout) to artifacts/clickprompt_pretrain/<ds>/<variant>/:

    layerwise   K prompts per layer as key/value prefixes (ClickPrompt)
    input       K prompts at the input layer only (for the "w/o layer-wise" ablation)
    plain       no prompts, plain MLM on the texts (for the "w/o prompt" ablation)

`clickprompt` (one instance per ``clickprompt.finetune.variants``) finetunes on the CTR label and
writes artifacts/clickprompt/<ds>/<variant>/ in the layout of docs/CONTRACTS.md:

    clickprompt_wo_plm        CTR model alone from the `layerwise` checkpoint; train.seeds; a zoo checkpoint
    clickprompt_with_plm      CTR model + prompted PLM from `layerwise`
    clickprompt_wo_prompt     late fusion of CTR model and PLM without prompts, from `plain`
    clickprompt_wo_pretrain   ClickPrompt with PLM straight from the public weights (no PA-MLM)
    clickprompt_wo_both       late fusion, no PA-MLM
    clickprompt_wo_layerwise  input-layer prompts, from `input`
    ctr_same_budget           the CTR model alone from scratch, trained on exactly the rows and settings of
                              the with-PLM variants: their RelaImpr base when those run on a subsample

Texts come from the text stage (artifacts/text/<ds>/, a declared input). Budgets (the short default
profile; null = the full split):
``clickprompt.pretrain.rows`` seeded training rows for PA-MLM; ``clickprompt.finetune.rows`` and
``valid_rows`` the training and early-stopping validation rows of everything that runs the PLM in
finetuning (and of ``ctr_same_budget``). The with-PLM variants' valid predictions cover those
validation rows only (``row`` says which); the CTR-only path from PA-MLM always trains on the full
split, and test is always scored in full.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.curves import Curves
from assets.features import load_encoded
from assets.registry import get_stage
from assets.runs import (
    PREDICTIONS,
    SUMMARY,
    fit_seed,
    fit_summary,
    predictions_frame,
    resume_key,
    scored,
    seeds,
    train_config,
    work_dir,
    write_variant,
)
from assets.split import SPLITS
from assets.tables import read_table, write_json, write_table
from assets.train import model_hparams
from llm4ctr.atomic import atomic_dir, write_text
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir, located, portable

PRETRAIN_STAGE = "clickprompt_pretrain"
STAGE = "clickprompt"
PRETRAIN_ONLY = ("variants", "mask_probability", "rows")  # pretrain keys that are not PretrainConfig settings
PRETRAIN_MODES = {"layerwise": "layerwise", "input": "input", "plain": None}  # variant -> prompt mode (None: K=0)


@dataclass(frozen=True)
class FinetuneSpec:
    """What a finetuning variant is: which PA-MLM checkpoint it starts from (None: public weights), with
    or without the PLM, and its prompts (mode None: no prompts)."""

    pretrained: str | None
    with_plm: bool
    mode: str | None = "layerwise"


VARIANTS = {
    "clickprompt_wo_plm": FinetuneSpec("layerwise", with_plm=False),
    "clickprompt_with_plm": FinetuneSpec("layerwise", with_plm=True),
    "clickprompt_wo_prompt": FinetuneSpec("plain", with_plm=True, mode=None),
    "clickprompt_wo_pretrain": FinetuneSpec(None, with_plm=True),
    "clickprompt_wo_both": FinetuneSpec(None, with_plm=True, mode=None),
    "clickprompt_wo_layerwise": FinetuneSpec("input", with_plm=True, mode="input"),
    "ctr_same_budget": FinetuneSpec(None, with_plm=False, mode=None),
}


# ---------------------------------------------------------------------- inputs
def texts(root: Path, dataset: str) -> dict[str, pd.Series]:
    """The ClickPrompt text of every row of each split, in split-file order (the text stage's output)."""
    folder = artifact_dir(root, "text", dataset)
    return {name: read_table(folder / f"{name}.parquet", columns=["text"])["text"] for name in SPLITS}


def subsample(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted row indices: all ``n`` rows when ``size`` is None or >= n, else a seeded sample of ``size``."""
    if size is None or int(size) >= n:
        return np.arange(n)
    if int(size) < 1:
        raise ParamsError(f"clickprompt: a row budget must be a positive integer or null, got {size!r}")
    return np.sort(np.random.default_rng(seed).choice(n, int(size), replace=False))


def text_arrays(
    arrays: dict[str, np.ndarray], text: pd.Series, rows: np.ndarray, tokenizer, max_length: int
) -> dict[str, np.ndarray]:
    """The encoded ID fields of ``rows`` plus their tokenized texts."""
    from models.clickprompt import tokenize

    if len(text) != len(arrays["label"]):
        raise DataError(
            f"texts ({len(text)} rows) and encoded features ({len(arrays['label'])} rows) differ; "
            "re-run the text and features stages on the same split"
        )
    return {**{k: v[rows] for k, v in arrays.items()}, **tokenize(text.iloc[rows].tolist(), tokenizer, max_length)}


def _plm(params: Params) -> str:
    from assets.pretrained import resolve

    return resolve(str(params.get_path("plm.name")))


def _ctr(params: Params, vocab_sizes: dict[str, int]):
    from models.ctr import build_model

    name = params.get_path("clickprompt.ctr_model")
    return build_model(name, vocab_sizes, **model_hparams(params, name))


def _settings(params: Params, key: str, drop: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in dict(params.get_path(key)).items() if k not in drop}


def _known(variant: str, known, key: str) -> None:
    if variant not in known:
        raise ParamsError(f"{key}: unknown variant '{variant}'; choose from {sorted(known)}")


# ---------------------------------------------------------------------- stage clickprompt_pretrain
def pamlm_objective(params: Params, vocab_sizes: dict[str, int], variant: str):
    """(PA-MLM objective, tokenizer, fresh MLM-head parameter names) of pretrain variant ``variant``, built
    from the public PLM weights and a fresh CTR model (seeded by ``clickprompt.pretrain.seed``)."""
    import torch
    from transformers import AutoTokenizer

    from models.clickprompt import PAMLM, ClickPromptNet, load_masked_lm

    _known(variant, PRETRAIN_MODES, "clickprompt.pretrain.variants")
    plm = _plm(params)
    tokenizer = AutoTokenizer.from_pretrained(plm)
    torch.manual_seed(int(params.get_path("clickprompt.pretrain.seed")))
    mode = PRETRAIN_MODES[variant]
    plm_encoder, head, fresh = load_masked_lm(plm)
    net = ClickPromptNet(
        _ctr(params, vocab_sizes),
        plm_encoder,
        int(params.get_path("clickprompt.num_prompts")) if mode else 0,
        mode or "layerwise",
    )
    objective = PAMLM(
        net,
        head,
        tokenizer.mask_token_id,
        tokenizer.all_special_ids,
        len(tokenizer),
        float(params.get_path("clickprompt.pretrain.mask_probability")),
        fresh,
    )
    return objective, tokenizer, fresh


def pretrain_work_dir(params: Params, root: Path, variant: str) -> Path:
    """The resumable PA-MLM checkpoint folder of pretrain variant ``variant``."""
    return work_dir(
        root,
        PRETRAIN_STAGE,
        params.get_path("data.name"),
        variant,
        int(params.get_path("clickprompt.pretrain.seed")),
        resume_key(params, root, PRETRAIN_STAGE, variant),
    )


def pretrain(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """PA-MLM for pretrain variant ``variant`` (resumable); writes the ClickPrompt checkpoint."""
    from models.clickprompt import PretrainConfig
    from models.clickprompt import pretrain as run_pretrain

    _known(variant, PRETRAIN_MODES, "clickprompt.pretrain.variants")
    dataset = params.get_path("data.name")
    config = PretrainConfig.from_dict(_settings(params, "clickprompt.pretrain", PRETRAIN_ONLY))
    encoder, arrays = load_encoded(root, dataset)
    objective, tokenizer, fresh = pamlm_objective(params, encoder.vocab_sizes, variant)
    rows = subsample(
        len(arrays["train"]["label"]),
        params.get_path("clickprompt.pretrain.rows"),
        int(params.get_path("clickprompt.subsample_seed")),
    )
    data = text_arrays(
        arrays["train"], texts(root, dataset)["train"], rows, tokenizer, int(params.get_path("clickprompt.max_length"))
    )
    data.pop("label")  # PA-MLM sees no CTR label
    summary = run_pretrain(objective, data, pretrain_work_dir(params, root, variant), config)
    Curves(root, PRETRAIN_STAGE, dataset, variant).add(config.seed, summary["history"])
    with atomic_dir(artifact_dir(root, PRETRAIN_STAGE, dataset) / variant) as tmp:
        objective.net.save(tmp, tokenizer)
        write_json(
            {
                "variant": variant,
                "plm": portable(params.get_path("plm.name"), root),
                "params_digest": params.digest(get_stage(PRETRAIN_STAGE).params),
                "fresh_head_params": fresh,
                **summary,
            },
            tmp / "summary.json",
        )
    return {
        "variant": variant,
        "rows": summary["rows"],
        "steps": summary["steps"],
        "loss_first": summary["loss_first"],
        "loss_last": summary["loss_last"],
        "seconds": summary["seconds"],
    }


# ---------------------------------------------------------------------- stage clickprompt
def finetune(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Finetune ``variant`` for each of its seeds; write predictions, summary and checkpoints."""
    _known(variant, VARIANTS, "clickprompt.finetune.variants")
    spec = VARIANTS[variant]
    dataset = params.get_path("data.name")
    key = resume_key(params, root, STAGE, variant)
    source = artifact_dir(root, PRETRAIN_STAGE, dataset) / spec.pretrained if spec.pretrained else None
    if source is not None and not (source / "clickprompt.json").is_file():
        raise DataError(
            f"{source}: no PA-MLM checkpoint; add '{spec.pretrained}' to clickprompt.pretrain.variants "
            f"and run stage {PRETRAIN_STAGE}"
        )
    run = _finetune_with_plm if spec.with_plm else _finetune_wo_plm
    with atomic_dir(artifact_dir(root, STAGE, dataset) / variant) as tmp:
        records, per_seed, extra, valid_rows = run(params, root, variant, spec, source, key, tmp)
        summary = {
            "variant": variant,
            "stage": STAGE,
            "pretrained_from": portable(source, root) if source else None,
            "params_digest": params.digest(get_stage(STAGE).params),
            "seeds": per_seed,
            **extra,
        }
        if valid_rows is None:
            write_variant(tmp, records, summary)
        else:  # valid predictions of some rows only (the PLM is costly): say which
            frame = predictions_frame(records)
            frame.loc[frame["split"] == "valid", "row"] = np.tile(valid_rows, len(per_seed))
            write_table(frame, tmp / PREDICTIONS)
            write_json(summary, tmp / SUMMARY)
    return {"variant": variant, **{f"seed{s}_valid_auc": v["valid_auc"] for s, v in per_seed.items()}}


def _budget(params: Params, arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, early-stopping validation rows) of the with-PLM budget (``finetune.rows``, ``valid_rows``)."""
    seed = int(params.get_path("clickprompt.subsample_seed"))
    return (
        subsample(len(arrays["train"]["label"]), params.get_path("clickprompt.finetune.rows"), seed),
        subsample(len(arrays["valid"]["label"]), params.get_path("clickprompt.finetune.valid_rows"), seed),
    )


def _finetune_wo_plm(params, root, variant, spec, source, key, out):
    """The CTR model alone. From the PA-MLM checkpoint: trained exactly like the zoo baseline (full split,
    `train` section). From scratch (``ctr_same_budget``): on the with-PLM rows and settings."""
    import torch

    from models.clickprompt import pretrained_ctr

    dataset = params.get_path("data.name")
    encoder, arrays = load_encoded(root, dataset)
    train, valid, overrides = arrays["train"], arrays["valid"], {}
    if source is None:
        train_rows, valid_rows = _budget(params, arrays)
        train = {k: v[train_rows] for k, v in train.items()}
        valid = {k: v[valid_rows] for k, v in valid.items()}
        overrides = dict(params.get_path("clickprompt.finetune.train"))
    records, per_seed = [], {}
    curves = Curves(root, STAGE, dataset, variant)
    for seed in seeds(params):
        torch.manual_seed(seed)
        model = pretrained_ctr(source) if source is not None else _ctr(params, encoder.vocab_sizes)
        _, per_seed[seed], predictions = fit_seed(
            model,
            train_config(params, seed, **overrides),
            train,
            valid,
            scored(arrays),
            work_dir(root, STAGE, dataset, variant, seed, key),
            out / f"seed{seed}",
            curves,
        )
        records += [(seed, split, p) for split, p in predictions]
    return (
        records,
        per_seed,
        {"train_rows": len(train["label"]), "early_stopping_valid_rows": len(valid["label"])},
        None,
    )


def _finetune_with_plm(params, root, variant, spec, source, key, out):
    """CTR model + PLM on the (sub-sampled) training texts; valid sub-sampled (early stopping and the
    written valid predictions), test in full."""
    import torch
    from transformers import AutoTokenizer

    from models.checkpoint import save_weights
    from models.trainer import Trainer

    settings = dict(params.get_path("clickprompt.finetune"))
    if float(settings["plm_lr"]) < 0:
        raise ParamsError(f"clickprompt.finetune.plm_lr must be >= 0 (0 = frozen PLM), got {settings['plm_lr']}")
    dataset = params.get_path("data.name")
    encoder, arrays = load_encoded(root, dataset)
    plm = str(source / "plm") if source else _plm(params)
    tokenizer = AutoTokenizer.from_pretrained(plm)
    max_length = int(params.get_path("clickprompt.max_length"))
    split_texts = texts(root, dataset)
    train_rows, valid_rows = _budget(params, arrays)
    data = {
        "train": text_arrays(arrays["train"], split_texts["train"], train_rows, tokenizer, max_length),
        "test": text_arrays(
            arrays["test"], split_texts["test"], np.arange(len(arrays["test"]["label"])), tokenizer, max_length
        ),
    }
    early_stopping = text_arrays(arrays["valid"], split_texts["valid"], valid_rows, tokenizer, max_length)

    records, per_seed = [], {}
    curves = Curves(root, STAGE, dataset, variant)
    for seed in settings["plm_seeds"]:
        seed = int(seed)
        torch.manual_seed(seed)
        model = with_plm_model(params, encoder.vocab_sizes, spec, source, settings)
        trainer = Trainer(model, train_config(params, seed, **dict(settings["train"])))
        started = time.perf_counter()
        result = trainer.fit(data["train"], early_stopping, work_dir(root, STAGE, dataset, variant, seed, key))
        curves.add(seed, result.history)
        per_seed[seed] = {
            **fit_summary(result, len(train_rows), time.perf_counter() - started),
            "alpha": round(float(model.alpha.detach()), 4),
        }
        for split, rows in (("valid", early_stopping), ("test", data["test"])):
            started = time.perf_counter()
            records.append((seed, split, _predict_by_length(trainer, rows)))
            per_seed[seed][f"{split}_predict_seconds"] = round(time.perf_counter() - started, 1)
        seed_dir = out / f"seed{seed}"
        seed_dir.mkdir()
        save_weights(model, seed_dir / "model.safetensors")
        write_text(
            seed_dir / "clickprompt.json",
            json.dumps(
                {"variant": variant, "pretrained_from": portable(source, root) if source else None, **settings},
                indent=2,
                default=str,
            ),
        )
    return (
        records,
        per_seed,
        {"train_rows": int(len(train_rows)), "early_stopping_valid_rows": int(len(valid_rows))},
        valid_rows,
    )


def with_plm_model(
    params: Params, vocab_sizes: dict[str, int], spec: FinetuneSpec, source: Path | None, settings: dict[str, Any]
):
    """The untrained ``ClickPromptWithPLM`` of a with-PLM variant: from the PA-MLM checkpoint ``source``, or
    (``source`` None) a fresh CTR model and the public PLM, prompted as ``spec.mode`` says."""
    from transformers import AutoModel

    from models.clickprompt import ClickPromptNet, ClickPromptWithPLM

    if source is not None:
        net = ClickPromptNet.load(source)
    else:
        net = ClickPromptNet(
            _ctr(params, vocab_sizes),
            AutoModel.from_pretrained(_plm(params)),
            int(params.get_path("clickprompt.num_prompts")) if spec.mode else 0,
            spec.mode or "layerwise",
        )
    return ClickPromptWithPLM(
        net, settings["pooling"], tuple(settings["head_units"]), float(settings["alpha"]), float(settings["plm_lr"])
    )


def load_with_plm(params: Params, root: Path, vocab_sizes: dict[str, int], seed_dir: Path):
    """A finetuned with-PLM model from its stage output ``<variant>/seed<s>`` (eval mode) and the folder
    its tokenizer comes from. The PA-MLM checkpoint it names is found under the project ``root``."""
    from safetensors.torch import load_file

    try:
        settings = json.loads((seed_dir / "clickprompt.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{seed_dir}: not a with-PLM finetuning output (clickprompt.json missing)") from None
    source = located(settings["pretrained_from"], root) if settings["pretrained_from"] else None
    model = with_plm_model(params, vocab_sizes, VARIANTS[settings["variant"]], source, settings)
    model.load_state_dict(load_file(seed_dir / "model.safetensors"))
    return model.eval(), (source / "plm" if source else Path(_plm(params)))


def _predict_by_length(trainer, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """``trainer.predict`` over rows sorted by text length (each batch is then cut to its longest text,
    see ``trim_padding``: less padding to run through the PLM), returned in the original row order."""
    order = np.argsort(arrays["attention_mask"].sum(axis=1), kind="stable")
    probs = np.empty(len(order))
    probs[order] = trainer.predict({k: v[order] for k, v in arrays.items()})
    return probs
