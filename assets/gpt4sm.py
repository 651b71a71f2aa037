"""Stages `gpt4sm_pretrain` and `gpt4sm`: GPT4SM's student with a teacher's embeddings, and its baseline.

Texts: one table per dataset, row 0 the empty text (padding), then every item text (the prompts
stage's item.parquet) and every user profile (profile.parquet). Teacher vectors: the
`hidden_states_teacher` export of the same texts (``hidden_states.teacher``; unit vectors; with
``gpt4sm.center_teacher`` the mean of each kind is subtracted and the rows re-normalised, which
mean-pooled decoder states need). Each row of a split reads its candidate ``item``, its user's
``profile`` and ``history``: the user's last ``gpt4sm.history_len`` liked items of the TRAINING split,
the row itself left out, so no row sees its own label and nothing of valid/test enters any input.

`gpt4sm_pretrain` (EaaP's first phase) copies the teacher per seed (``train.seeds``): the student's
trainable layers and the copy MLP learn MSE(c, u) over every text, no label; it writes
artifacts/gpt4sm_pretrain/<ds>/seed<k>/copy.safetensors and summary.json.

`gpt4sm` (one instance per ``gpt4sm.variants``) trains, per seed, with models.trainer (BCE + the
model's ``aux_loss``; early stopping on validation AUC) and writes the layout of docs/CONTRACTS.md
under artifacts/gpt4sm/<ds>/<variant>/. Variants:

    vanilla, eaaf, eaar, eaap, eaap_copyemb   the strategies of models/gpt4sm/model.py
    <zoo model>_teacher                       the zoo model (e.g. dcnv2_teacher) with the teacher's vectors
                                              as one dense feature: [u_item; mean u of the history; u_profile]

The student variants train on ``gpt4sm.rows`` seeded training rows (null: all) with the ``train``
section overridden by ``gpt4sm.train``; the zoo variant trains like the zoo baseline (all rows, the
``train`` section), so DCNv2 and DCNv2 + teacher differ only in the feature.
"""

from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.curves import Curves
from assets.features import load_encoded
from assets.hidden_states import role_model, stage_name
from assets.registry import get_stage
from assets.runs import fit_seed, resume_key, scored, seeds, train_config, work_dir, write_variant
from assets.split import SPLITS, load_splits
from assets.tables import read_table, write_json
from assets.train import model_hparams
from llm4ctr.atomic import atomic_dir, save_tensors
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir, portable

PRETRAIN_STAGE = "gpt4sm_pretrain"
STAGE = "gpt4sm"
TEACHER_STAGE = stage_name("teacher")
COPY_WEIGHTS = "copy.safetensors"
TEACHER_SUFFIX = "_teacher"
MODEL_KEYS = ("dim", "attention_dim", "copy_hidden", "head_units", "reg_weight")  # GPT4SM() arguments in params


# ---------------------------------------------------------------------- inputs
class Texts:
    """The text table of a dataset: row 0 empty, then items, then profiles; lookups id -> row."""

    def __init__(self, items: pd.DataFrame, profiles: pd.DataFrame):
        self.texts = ["", *items["text"].tolist(), *profiles["text"].tolist()]
        self.item_row = pd.Series(np.arange(1, len(items) + 1), index=items["item_id"].astype(str))
        self.profile_row = pd.Series(
            np.arange(len(items) + 1, len(items) + len(profiles) + 1), index=profiles["user_id"].astype(str)
        )

    @classmethod
    def read(cls, root: Path, dataset: str) -> Texts:
        folder = artifact_dir(root, "prompts", dataset)
        return cls(read_table(folder / "item.parquet"), read_table(folder / "profile.parquet"))

    def rows(self, lookup: pd.Series, ids: pd.Series, what: str) -> np.ndarray:
        rows = lookup.reindex(ids.astype(str)).to_numpy()
        if np.isnan(rows.astype(float)).any():
            missing = ids.astype(str)[np.isnan(rows.astype(float))].iloc[0]
            raise DataError(f"artifacts/prompts: no {what} text for '{missing}'; re-run the prompts stage")
        return rows.astype(np.int64)


def liked_histories(splits: dict[str, pd.DataFrame], texts: Texts, length: int) -> dict[str, np.ndarray]:
    """Per split, [rows, length] int64 text rows of each row's user's last ``length`` liked TRAINING items
    (oldest first, 0-padded at the end); a training row never lists itself."""
    train = splits["train"]
    liked = train.assign(_pos=np.arange(len(train)))[train["label"].to_numpy() == 1]
    liked = liked.sort_values("timestamp", kind="stable")
    item_rows = texts.rows(texts.item_row, liked["item_id"], "item")
    by_user = {
        user: (liked["_pos"].to_numpy()[idx], item_rows[idx])
        for user, idx in liked.groupby(liked["user_id"].astype(str), sort=False).indices.items()
    }
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    out = {}
    for name, frame in splits.items():
        history = np.zeros((len(frame), length), dtype=np.int64)
        for user, positions in frame.groupby(frame["user_id"].astype(str), sort=False).indices.items():
            rows, items = by_user.get(user, empty)
            tail = items[-length:] if length else items[:0]
            history[positions, : len(tail)] = tail
            if name != "train":
                continue
            recent_rows, recent_items = rows[-(length + 1) :], items[-(length + 1) :]
            for j in np.flatnonzero(np.isin(recent_rows, positions)):
                kept = np.delete(recent_items, j)[-length:] if length else recent_items[:0]
                history[recent_rows[j]] = 0
                history[recent_rows[j], : len(kept)] = kept
        out[name] = history
    return out


def row_arrays(splits: dict[str, pd.DataFrame], texts: Texts, length: int) -> dict[str, dict[str, np.ndarray]]:
    """Per split, the model's inputs: ``item``, ``history``, ``profile`` (text rows) and ``label``."""
    histories = liked_histories(splits, texts, length)
    return {
        name: {
            "item": texts.rows(texts.item_row, frame["item_id"], "item"),
            "history": histories[name],
            "profile": texts.rows(texts.profile_row, frame["user_id"], "profile"),
            "label": frame["label"].to_numpy(dtype=np.float32),
        }
        for name, frame in splits.items()
    }


def teacher_table(params: Params, root: Path, texts: Texts):
    """[len(texts), D] float32 unit teacher vectors in text-table order (row 0 zeros)."""
    import torch
    from safetensors import safe_open

    folder = artifact_dir(root, TEACHER_STAGE, params.get_path("data.name"))
    parts = []
    for kind, lookup, id_column in (("item", texts.item_row, "item_id"), ("profile", texts.profile_row, "user_id")):
        path = folder / kind / "states.safetensors"
        if not path.is_file():
            raise DataError(f"{path}: not found; run the {TEACHER_STAGE} stage first")
        with safe_open(str(path), framework="pt") as handle:
            states = handle.get_tensor("states").float()
        index = read_table(folder / kind / "index.parquet")
        rows = pd.Series(np.arange(len(index)), index=index[id_column].astype(str))
        wanted = lookup.index.to_series()
        missing = wanted[~wanted.isin(rows.index)]
        if len(missing):
            raise DataError(f"{folder / kind}: no teacher vector for {id_column} '{missing.iloc[0]}'; re-run it")
        vectors = states[torch.as_tensor(rows[wanted].to_numpy())]
        if params.get_path("gpt4sm.center_teacher"):
            vectors = vectors - vectors.mean(dim=0)
        parts.append(torch.nn.functional.normalize(vectors, dim=-1))
    return torch.cat([torch.zeros(1, parts[0].shape[1]), *parts])


def _positive_int(params: Params, key: str, zero: bool = False) -> int:
    value = params.get_path(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise ParamsError(
            f"{params.source}: {key} must be a {'non-negative' if zero else 'positive'} integer, got {value!r}"
        )
    return value


def build_student(params: Params, root: Path, texts: Texts):
    """The student over the text table: the frozen part's states (computed once per student, texts and
    depth, then read from artifacts/.work/gpt4sm_student/), the top ``gpt4sm.trainable_layers`` copied."""
    import hashlib
    import json

    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from assets.pretrained import fingerprint
    from models.gpt4sm import Student, frozen_states

    path = role_model(params, str(params.get_path("gpt4sm.student")))
    layers = _positive_int(params, "gpt4sm.trainable_layers", zero=True)
    max_length = _positive_int(params, "gpt4sm.max_length")
    key = hashlib.sha256(json.dumps([fingerprint(path), layers, max_length, texts.texts]).encode()).hexdigest()[:16]
    cache = Path(root) / "artifacts" / ".work" / "gpt4sm_student" / f"{key}.safetensors"
    encoder = AutoModel.from_pretrained(path)
    if cache.is_file():
        tensors = load_file(str(cache))
        states, mask = tensors["states"], tensors["mask"]
    else:
        states, mask = frozen_states(encoder, AutoTokenizer.from_pretrained(path), texts.texts, layers, max_length)
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_tensors({"states": states, "mask": mask}, cache)
    return Student.from_encoder(encoder, states, mask, layers)


def build_model(params: Params, strategy: str, student, teacher, seed: int):
    """A fresh GPT4SM of ``strategy`` (weights seeded by ``seed``); the student's layers are re-copied."""
    import copy

    import torch

    from models.gpt4sm import GPT4SM

    torch.manual_seed(seed)
    settings = {k: params.get_path(f"gpt4sm.{k}") for k in MODEL_KEYS}
    try:
        return GPT4SM(copy.deepcopy(student), teacher, strategy, **settings)
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{params.source}: gpt4sm: {exc}") from None


class Inputs:
    """What the GPT4SM stages read, each loaded on first use: splits, texts, teacher, student, row arrays."""

    def __init__(self, params: Params, root: Path):
        self.params, self.root = params, root
        self.dataset = params.get_path("data.name")
        self.texts = Texts.read(root, self.dataset)
        self.teacher = teacher_table(params, root, self.texts)

    @cached_property
    def student(self):
        return build_student(self.params, self.root, self.texts)

    @cached_property
    def splits(self) -> dict[str, pd.DataFrame]:
        return load_splits(self.root, self.dataset)

    @cached_property
    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        return row_arrays(self.splits, self.texts, _positive_int(self.params, "gpt4sm.history_len"))


# ---------------------------------------------------------------------- stage gpt4sm_pretrain
def pretrain(params: Params, root: Path) -> dict[str, Any]:
    """EaaP's copy pre-training, per seed: the weights c depends on, trained to reproduce the teacher."""
    import torch

    from models.gpt4sm import CopyConfig, copy_pretrain

    dataset = params.get_path("data.name")
    inputs = Inputs(params, root)
    texts = torch.arange(1, len(inputs.texts.texts))
    per_seed = {}
    with atomic_dir(artifact_dir(root, PRETRAIN_STAGE, dataset)) as tmp:
        for seed in seeds(params):
            model = build_model(params, "eaap", inputs.student, inputs.teacher, seed)
            config = CopyConfig.from_dict({**dict(params.get_path("gpt4sm.pretrain")), "seed": seed})
            with torch.no_grad():
                before = float(model.copy_loss(texts))
            started = time.perf_counter()
            losses = copy_pretrain(model, texts, config)
            with torch.no_grad():
                after = float(model.copy_loss(texts))
            (tmp / f"seed{seed}").mkdir()
            save_tensors({k: v.contiguous() for k, v in model.copy_state().items()}, tmp / f"seed{seed}" / COPY_WEIGHTS)
            per_seed[seed] = {
                "distance_before": round(before, 6),
                "distance_after": round(after, 6),
                "epoch_losses": losses,
                "seconds": round(time.perf_counter() - started, 2),
            }
        write_json(
            {
                "texts": len(texts),
                "teacher_dim": int(inputs.teacher.shape[1]),
                "student": portable(role_model(params, str(params.get_path("gpt4sm.student"))), root),
                "params_digest": params.digest(get_stage(PRETRAIN_STAGE).params),
                "seeds": per_seed,
            },
            tmp / "summary.json",
        )
    return {f"seed{s}_{k}": v[k] for s, v in per_seed.items() for k in ("distance_before", "distance_after")}


# ---------------------------------------------------------------------- stage gpt4sm
def teacher_features(arrays: dict[str, np.ndarray], teacher) -> np.ndarray:
    """[rows, 3D] float32 [u_item; unit mean u of the history (0 when empty); u_profile]."""
    import torch

    history = torch.as_tensor(arrays["history"])
    pooled = teacher[history].sum(dim=1)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    item, profile = teacher[torch.as_tensor(arrays["item"])], teacher[torch.as_tensor(arrays["profile"])]
    return torch.cat([item, pooled, profile], dim=1).numpy().astype(np.float32)


def run(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Train ``variant`` per seed; write predictions, summary and checkpoints."""
    from models.gpt4sm import STRATEGIES

    if variant not in STRATEGIES and not _zoo_variant(variant):
        raise ParamsError(
            f"{params.source}: gpt4sm.variants: unknown variant '{variant}'; choose from {sorted(STRATEGIES)} "
            f"or <zoo model>{TEACHER_SUFFIX}"
        )
    dataset = params.get_path("data.name")
    inputs = Inputs(params, root)
    key = resume_key(params, root, STAGE, variant)
    fit = _fit_zoo if variant not in STRATEGIES else _fit_student
    records, per_seed = [], {}
    curves = Curves(root, STAGE, dataset, variant)
    with atomic_dir(artifact_dir(root, STAGE, dataset) / variant) as tmp:
        for seed in seeds(params):
            per_seed[seed], predictions = fit(params, root, variant, inputs, seed, work_dir(
                root, STAGE, dataset, variant, seed, key), tmp / f"seed{seed}", curves)  # fmt: skip
            records += [(seed, split, p) for split, p in predictions]
        summary = {
            "variant": variant,
            "stage": STAGE,
            "teacher_at_inference": variant == "eaaf" or variant not in STRATEGIES,
            "params_digest": params.digest(get_stage(STAGE).params),
            "seeds": per_seed,
        }
        write_variant(tmp, records, summary)
    return {"variant": variant, **{f"seed{s}_valid_auc": v["valid_auc"] for s, v in per_seed.items()}}


def _zoo_variant(variant: str) -> str | None:
    """The zoo model of ``<zoo model>_teacher``, else None."""
    from models.ctr import MODELS

    name = variant.removesuffix(TEACHER_SUFFIX)
    return name if variant.endswith(TEACHER_SUFFIX) and name in MODELS else None


def _fit_student(
    params: Params, root: Path, variant: str, inputs: Inputs, seed: int, work: Path, out: Path, curves: Curves
):
    from safetensors.torch import load_file

    from assets.clickprompt import subsample
    from models.gpt4sm import PRETRAINED

    model = build_model(params, variant, inputs.student, inputs.teacher, seed)
    if variant in PRETRAINED:
        path = artifact_dir(root, PRETRAIN_STAGE, params.get_path("data.name")) / f"seed{seed}" / COPY_WEIGHTS
        if not path.is_file():
            raise DataError(f"{path}: no copy pre-training for seed {seed}; run stage {PRETRAIN_STAGE}")
        missing = set(model.copy_state()) - set(weights := load_file(str(path)))
        if missing:
            raise DataError(f"{path}: written for another student or copy MLP (missing {sorted(missing)[0]})")
        model.load_state_dict(weights, strict=False)
    train = inputs.arrays["train"]
    rows = subsample(len(train["label"]), params.get_path("gpt4sm.rows"), int(params.get_path("gpt4sm.subsample_seed")))
    config = train_config(params, seed, **dict(params.get_path("gpt4sm.train") or {}))
    _, figures, predictions = fit_seed(
        model,
        config,
        {k: v[rows] for k, v in train.items()},
        inputs.arrays["valid"],
        scored(inputs.arrays),
        work,
        out,
        curves,
    )
    return {**figures, "train_rows": len(rows)}, predictions


def _fit_zoo(
    params: Params, root: Path, variant: str, inputs: Inputs, seed: int, work: Path, out: Path, curves: Curves
):
    import torch

    from models.ctr import build_model as build_zoo

    backbone = _zoo_variant(variant)
    encoder, encoded = load_encoded(root, params.get_path("data.name"))
    data = {s: {**encoded[s], "dense": teacher_features(inputs.arrays[s], inputs.teacher)} for s in SPLITS}
    torch.manual_seed(seed)
    model = build_zoo(
        backbone,
        encoder.vocab_sizes,
        **{**model_hparams(params, backbone), "dense_dim": data["train"]["dense"].shape[1]},
    )
    _, figures, predictions = fit_seed(
        model, train_config(params, seed), data["train"], data["valid"], scored(data), work, out, curves
    )
    return figures, predictions
