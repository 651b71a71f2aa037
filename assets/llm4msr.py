"""Stages `msr` and `llm4msr`: train one multi-scenario variant (backbone x enhancement) per seed.

* `msr` (one variant per entry of ``llm4msr.baselines``): the plain backbones and their DN / EP
  enhancements (``star``, ``star_dn``, ``star_ep``, ...); they read only the encoded features.
* `llm4msr` (one variant per entry of ``llm4msr.enhanced``): the LLM4MSR variants (``star_ours``, ...);
  they also read the cached LLM states of the user- and scenario-level prompts
  (artifacts/hidden_states_user, artifacts/hidden_states_scenario) and the user prompts' counts of
  liked items (artifacts/prompts). The LLM itself is never loaded.

Each writes artifacts/<stage>/<dataset>/<variant>/ in the layout of docs/CONTRACTS.md (predictions of
valid and test per seed, summary.json, seed<k>/ checkpoints that ``models.msr.load_msr`` reads, LLM
states included); training resumes from artifacts/.work/ after a kill. :func:`scenario_table` lays
the evaluate stage's per-scenario AUCs out like the LLM4MSR paper (rows backbone, _DN, _EP, _ours).

Cold start: a user whose prompt lists fewer than ``llm4msr.cold_start_min_liked`` liked items (by
default: none at all), and any user unseen in training, gets the model's learned default state.

Control (``llm4msr.user_states``): ``llm`` (the default) feeds each user their own LLM state;
``shuffled`` hands the warm users' states out among them in a seeded random order, ``random``
replaces them by Gaussian vectors of the same mean and spread. An _ours model that does as well on
those as on ``llm`` gains nothing from what the LLM says about each user (docs/RESULTS_LLM4MSR.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from assets.curves import Curves
from assets.features import load_encoded
from assets.registry import get_stage
from assets.runs import fit_seed, resume_key, scored, seeds, train_config, work_dir, write_variant
from assets.tables import read_table
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir

if TYPE_CHECKING:
    import torch

BASELINE_STAGE, STAGE = "msr", "llm4msr"
STATE_STAGES = {"user": "hidden_states_user", "scenario": "hidden_states_scenario"}
PROMPTS_STAGE = "prompts"
USER_STATES = ("llm", "shuffled", "random")
CONTROL_SEED = 0  # the permutation / draw of the shuffled and random controls


def msr_hparams(params: Params, variant: str) -> dict[str, Any]:
    """build_msr keyword arguments of ``variant`` from params ``llm4msr`` (a missing key is an error)."""
    from models.msr import parse_variant

    backbone, enhancement = parse_variant(variant)
    return {
        "embedding_dim": int(params.get_path("llm4msr.embedding_dim")),
        "scenario_field": str(params.get_path("llm4msr.scenario_field")),
        "backbone_params": dict(params.get_path(f"llm4msr.backbones.{backbone}")),
        "enhancement_params": dict(
            params.get_path(f"llm4msr.enhancements.{enhancement}") if enhancement != "plain" else {}
        ),
    }


def check_scenarios(encoder, arrays: dict[str, dict[str, np.ndarray]], field: str) -> None:
    """DataError when a split holds a scenario the training split lacks: such a row has no path."""
    from models.features import FIRST_ID

    if field not in encoder.vocab_sizes:
        raise ParamsError(
            f"llm4msr.scenario_field '{field}' is not a feature field (fields: {list(encoder.vocab_sizes)})"
        )
    for split, columns in arrays.items():
        unseen = int((columns[field] < FIRST_ID).sum())
        if unseen:
            raise DataError(
                f"{split}: {unseen} row(s) have a '{field}' value absent from the training split; "
                f"every scenario needs training rows (training scenarios: {encoder.vocabs[field]})"
            )


def read_states(root: Path, dataset: str, kind: str) -> tuple[pd.Series, torch.Tensor]:
    """(ids, states) of the ``hidden_states_<kind>`` export: the index's id column and the fp32 [rows, dim] tensor."""
    from safetensors import safe_open

    from assets.prompts import ID_COLUMNS

    folder = artifact_dir(root, STATE_STAGES[kind], dataset)
    path = folder / "states.safetensors"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the {STATE_STAGES[kind]} stage first")
    index = read_table(folder / "index.parquet")
    with safe_open(str(path), framework="pt") as handle:
        states = handle.get_tensor("states").float()
    if len(index) != len(states):
        raise DataError(f"{folder}: index.parquet has {len(index)} rows but states.safetensors {len(states)}")
    return index[ID_COLUMNS[kind]].astype(str), states


def llm_states(params: Params, root: Path, encoder) -> dict[str, Any]:
    """The LLM states laid out for the model: users by encoded user id (+ known mask), scenarios by index."""
    import torch

    from models.features import FIRST_ID

    dataset = params.get_path("data.name")
    user_field, scenario_field = (
        str(params.get_path("llm4msr.user_field")),
        str(params.get_path("llm4msr.scenario_field")),
    )
    min_liked = int(params.get_path("llm4msr.cold_start_min_liked"))
    kind = str(params.get_path("llm4msr.user_states"))
    user_ids, user_states = read_states(root, dataset, "user")
    scenario_ids, scenario_states = read_states(root, dataset, "scenario")
    if user_states.shape[1] != scenario_states.shape[1]:
        raise DataError(
            f"user states are {user_states.shape[1]}-d but scenario states {scenario_states.shape[1]}-d; "
            "both must come from the same LLM"
        )

    prompts = read_table(artifact_dir(root, PROMPTS_STAGE, dataset) / "user.parquet")
    liked = pd.Series(prompts["n_liked"].to_numpy(), index=prompts["user_id"].astype(str))
    rows = encoder.transform(pd.DataFrame({user_field: user_ids.to_numpy()}))[user_field]
    warm = (rows >= FIRST_ID) & (liked.reindex(user_ids.to_numpy()).fillna(0).to_numpy() >= min_liked)
    users = torch.zeros(encoder.vocab_sizes[user_field], user_states.shape[1])
    known = torch.zeros(encoder.vocab_sizes[user_field], dtype=torch.bool)
    users[torch.as_tensor(rows[warm])] = control(user_states[torch.as_tensor(np.flatnonzero(warm))], kind)
    known[torch.as_tensor(rows[warm])] = True

    positions = pd.Series(np.arange(len(scenario_ids)), index=scenario_ids.to_numpy())
    missing = [s for s in encoder.vocabs[scenario_field] if s not in positions.index]
    if missing:
        raise DataError(
            f"{artifact_dir(root, STATE_STAGES['scenario'], dataset)}: no state for scenario(s) {missing}; "
            "re-run the prompts and hidden_states_scenario stages"
        )
    scenarios = scenario_states[torch.as_tensor(positions[encoder.vocabs[scenario_field]].to_numpy())]
    in_training = encoder.vocab_sizes[user_field] - FIRST_ID
    return {
        "users": users,
        "known": known,
        "scenarios": scenarios,
        "dim": int(user_states.shape[1]),
        "warm_users": int(known.sum()),
        "cold_users": in_training - int(known.sum()),
        "user_states": kind,
    }


def control(states: torch.Tensor, kind: str) -> torch.Tensor:
    """The user states as fed to the model: as they are (``llm``), permuted among users (``shuffled``)
    or Gaussian with the same per-dimension mean and std (``random``); seeded by ``CONTROL_SEED``."""
    import torch

    if kind not in USER_STATES:
        raise ParamsError(f"llm4msr.user_states must be one of {USER_STATES}, got {kind!r}")
    if kind == "llm":
        return states
    generator = torch.Generator().manual_seed(CONTROL_SEED)
    if kind == "shuffled":
        return states[torch.randperm(len(states), generator=generator)]
    noise = torch.randn(states.shape, generator=generator)  # random
    return states.mean(dim=0) + noise * states.std(dim=0, unbiased=False)


def train_variant(params: Params, root: Path, variant: str, stage: str) -> dict[str, Any]:
    """Train ``variant`` once per seed of ``train.seeds``; write predictions, summary and checkpoints."""
    import torch

    from models.msr import build_msr, parse_variant

    dataset = params.get_path("data.name")
    encoder, arrays = load_encoded(root, dataset)
    hparams = msr_hparams(params, variant)
    check_scenarios(encoder, arrays, hparams["scenario_field"])
    ours = parse_variant(variant)[1] == "ours"
    states = llm_states(params, root, encoder) if ours else None
    if ours:
        hparams["enhancement_params"]["llm_dim"] = states["dim"]
        hparams["enhancement_params"].setdefault("user_field", str(params.get_path("llm4msr.user_field")))
    key = resume_key(params, root, stage, variant)
    records, per_seed = [], {}
    curves = Curves(root, stage, dataset, variant)
    with atomic_dir(artifact_dir(root, stage, dataset) / variant) as tmp:
        for seed in seeds(params):
            torch.manual_seed(seed)
            model = build_msr(variant, encoder.vocab_sizes, **hparams)
            if ours:
                model.enhancement.set_llm_states(states["users"], states["known"], states["scenarios"])
            trainer, per_seed[seed], predictions = fit_seed(
                model,
                train_config(params, seed, **dict(params.get_path("llm4msr.train"))),
                arrays["train"],
                arrays["valid"],
                scored(arrays),
                work_dir(root, stage, dataset, variant, seed, key),
                tmp / f"seed{seed}",
                curves,
            )
            if ours:
                per_seed[seed]["alpha"] = round(float(trainer.model.enhancement.alpha.detach()), 4)
            records += [(seed, split, p) for split, p in predictions]
        summary = {
            "variant": variant,
            "stage": stage,
            "hparams": hparams,
            "params_digest": params.digest(get_stage(stage).params),
            "seeds": per_seed,
            "scenarios": list(encoder.vocabs[hparams["scenario_field"]]),
        }
        if ours:
            summary.update({k: states[k] for k in ("warm_users", "cold_users", "user_states")})
        write_variant(tmp, records, summary)
    return {"variant": variant, **{f"seed{s}_valid_auc": v["valid_auc"] for s, v in per_seed.items()}}


def _require(variant: str, ours: bool, key: str) -> None:
    from models.msr import parse_variant

    if (parse_variant(variant)[1] == "ours") != ours:
        kind = "LLM4MSR (_ours)" if ours else "plain, _dn or _ep"
        raise ParamsError(f"{key} lists '{variant}', but that list takes {kind} variants only")


def run_baseline(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Stage `msr`: a plain, _dn or _ep variant (no LLM states needed)."""
    _require(variant, ours=False, key="llm4msr.baselines")
    return train_variant(params, root, variant, BASELINE_STAGE)


def run(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Stage `llm4msr`: an _ours variant, its meta-networks fed by the cached LLM states."""
    _require(variant, ours=True, key="llm4msr.enhanced")
    return train_variant(params, root, variant, STAGE)


def scenario_table(models: dict[str, dict[str, Any]], scenarios: list[str] | None = None) -> str:
    """The paper's per-scenario AUC table from evaluate's per-variant figures (``results.json["models"]``).

    One block of rows per backbone (backbone, backbone_DN, backbone_EP, backbone_ours; variants that
    were not run are left out), one column per scenario plus the overall test AUC; the best AUC of
    each block and column is in bold.
    """
    from models.msr import BACKBONES, ENHANCEMENTS, variant_name

    scenarios = scenarios or sorted({s for entry in models.values() for s in entry.get("per_scenario", {})})
    suffix = {"plain": "", "dn": "_DN", "ep": "_EP", "ours": "_ours"}
    lines = ["| model | " + " | ".join(scenarios) + " | overall |", "|---" * (len(scenarios) + 2) + "|"]
    for backbone in BACKBONES:
        block = [
            (backbone + suffix[e], models[variant_name(backbone, e)])
            for e in ENHANCEMENTS
            if variant_name(backbone, e) in models
        ]
        columns = [[entry.get("per_scenario", {}).get(s, float("nan")) for _, entry in block] for s in scenarios]
        columns.append([entry["auc"] for _, entry in block])
        best = [np.nanmax(c) if len(c) and not np.all(np.isnan(c)) else None for c in columns]
        for row, (label, _) in enumerate(block):
            cells = [
                f"**{c[row]:.4f}**" if b is not None and c[row] == b else f"{c[row]:.4f}" for c, b in zip(columns, best)
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
