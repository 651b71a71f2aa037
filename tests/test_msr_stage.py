"""Stages `msr` and `llm4msr` on a generated dataset whose LLM states come from the real prompts and
hidden-state stages run with a tiny random Llama: contract outputs, reload, cold start, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from assets import features, hidden_states, llm4msr, prompts
from assets.split import split_table
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from models.features import FIRST_ID
from models.msr import all_variants, load_msr
from tests.fixtures_models import save_tiny
from tests.fixtures_params import PROMPTS_CONFIG, project_params
from tests.fixtures_tables import make_interactions, write_split_files

ROOT = Path(__file__).resolve().parents[1]
COLD_USER = "1"  # every one of its training ratings is made negative: no liked items, no state


def make_params(llm: str = "unused") -> Params:
    """params.yaml with small LLM4MSR models, two seeds and a two-epoch budget; ``llm`` is the tiny Llama."""
    return project_params({
        "features.min_count": 1, "features.n_bins": 4,
        "prompts.config": PROMPTS_CONFIG, "prompts.recent_n": 3,
        "llm.name": llm,
        "hidden_states.store": "store", "hidden_states.device": "cpu", "hidden_states.dtype": "auto",
        "hidden_states.batch_size": 16, "hidden_states.max_length": 64, "hidden_states.shard_size": 64,
        "hidden_states.user.model": "llm", "hidden_states.user.pooling": "last_token",
        "hidden_states.scenario.model": "llm", "hidden_states.scenario.pooling": "last_token",
        "train.seeds": [1, 2], "llm4msr.embedding_dim": 4, "llm4msr.scenario_field": "scenario",
        "llm4msr.user_field": "user_id", "llm4msr.cold_start_min_liked": 1,
        "llm4msr.backbones.star.hidden_units": [8], "llm4msr.backbones.star.aux_units": [4],
        "llm4msr.backbones.mmoe.num_experts": 2, "llm4msr.backbones.mmoe.expert_units": [8],
        "llm4msr.enhancements.dn.dims": [8], "llm4msr.enhancements.dn.meta_hidden": 2,
        "llm4msr.enhancements.ours.user_dims": [8], "llm4msr.enhancements.ours.scenario_dims": [4],
        "llm4msr.enhancements.ours.meta_hidden": 2,
        "train.batch_size": 128, "train.max_epochs": 2, "llm4msr.train.patience": 1, "train.progress": False,
    })  # fmt: skip


def cold_users(root: Path) -> set[str]:
    """Users without a liked (label 1) training interaction: COLD_USER, and any the generator gave no click."""
    train = pd.read_parquet(root / "artifacts" / "split" / "ml-100k" / "train.parquet")
    return set(train["user_id"].astype(str)) - set(train.loc[train["label"] == 1, "user_id"].astype(str))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Split, features, prompts and tiny-Llama hidden states of a generated three-scenario dataset."""
    root = tmp_path_factory.mktemp("msr")
    frame = make_interactions(n_users=60, n_items=40, per_user=20, scenarios="age")
    splits = split_table(frame, "random", (0.8, 0.1, 0.1), seed=0)
    splits["train"].loc[splits["train"]["user_id"] == COLD_USER, "label"] = 0
    write_split_files(root, splits)
    params = make_params(save_tiny(root / "llama", "llama"))
    features.run(params, root)
    prompts.run(params, root)
    hidden_states.run_user(params, root)
    hidden_states.run_scenario(params, root)
    return root


def test_full_profile_lists_every_variant_once_in_the_right_stage():
    full = yaml.safe_load((ROOT / "profiles" / "full.yaml").read_text())
    baselines, enhanced = full["llm4msr.baselines"], full["llm4msr.enhanced"]
    assert sorted(baselines + enhanced) == sorted(all_variants())
    assert all(v.endswith("_ours") for v in enhanced) and len(enhanced) == 6
    default = yaml.safe_load((ROOT / "params.yaml").read_text())["llm4msr"]  # the short profile: a subset
    assert set(default["baselines"]) <= set(baselines) and set(default["enhanced"]) <= set(enhanced)


@pytest.mark.parametrize(("stage", "variant"), [("msr", "mmoe_dn"), ("llm4msr", "star_ours")])
def test_stage_writes_contract_outputs_and_loadable_checkpoints(root, stage, variant):
    params = make_params()
    run = llm4msr.run if stage == "llm4msr" else llm4msr.run_baseline
    meta = run(params, root, variant=variant)
    assert set(meta) == {"variant", "seed1_valid_auc", "seed2_valid_auc"}
    out = root / "artifacts" / stage / "ml-100k" / variant
    preds = pd.read_parquet(out / "predictions.parquet")
    _, arrays = features.load_encoded(root, "ml-100k")
    counts = preds.groupby(["seed", "split"]).size()
    assert counts[(1, "test")] == counts[(2, "test")] == len(arrays["test"]["label"])
    assert counts[(1, "valid")] == len(arrays["valid"]["label"])
    summary = pd.read_json(out / "summary.json", typ="series")
    assert summary["scenarios"] == ["age25-34", "age<25", "age>=35"]
    model = load_msr(out / "seed2")
    batch = {k: torch.as_tensor(v) for k, v in arrays["test"].items() if k != "label"}
    with torch.inference_mode():
        probs = torch.sigmoid(model(batch)["logit"]).numpy()
    expected = preds[(preds["seed"] == 2) & (preds["split"] == "test")].sort_values("row")["prob"].to_numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    if variant.endswith("_ours"):
        cold = cold_users(root)
        assert COLD_USER in cold and (summary["cold_users"], summary["warm_users"]) == (len(cold), 60 - len(cold))
        assert 0 < summary["seeds"]["1"]["alpha"] < 1


def test_llm_states_align_with_encoder_ids_and_leave_cold_users_out(root):
    encoder, _ = features.load_encoded(root, "ml-100k")
    states = llm4msr.llm_states(make_params(), root, encoder)
    ids, raw = llm4msr.read_states(root, "ml-100k", "user")
    cold = cold_users(root)
    warm = next(user for user in encoder.vocabs["user_id"] if user not in cold)
    row = encoder.vocabs["user_id"].index(warm) + FIRST_ID
    torch.testing.assert_close(states["users"][row], raw[ids.tolist().index(warm)])
    rows = [encoder.vocabs["user_id"].index(user) + FIRST_ID for user in cold]
    assert COLD_USER in cold and not states["known"][rows].any() and not states["known"][:FIRST_ID].any()
    assert int(states["known"].sum()) == len(encoder.vocabs["user_id"]) - len(cold)
    scenario_ids, scenario_raw = llm4msr.read_states(root, "ml-100k", "scenario")
    for k, name in enumerate(encoder.vocabs["scenario"]):
        torch.testing.assert_close(states["scenarios"][k], scenario_raw[scenario_ids.tolist().index(name)])


def test_user_state_controls_keep_the_warm_set_but_not_who_gets_which_state(root):
    encoder, _ = features.load_encoded(root, "ml-100k")
    real = llm4msr.llm_states(make_params(), root, encoder)
    warm = real["known"]
    for kind in ("shuffled", "random"):
        params = make_params()
        params["llm4msr"]["user_states"] = kind
        fed = llm4msr.llm_states(params, root, encoder)
        assert torch.equal(fed["known"], warm) and torch.equal(fed["scenarios"], real["scenarios"])
        assert not torch.allclose(fed["users"][warm], real["users"][warm])
        assert torch.all(fed["users"][~warm] == 0)
    shuffled = llm4msr.control(real["users"][warm], "shuffled")  # the same states, handed to other users
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, real["users"][warm].tolist()))
    with pytest.raises(ParamsError, match="user_states must be one of"):
        llm4msr.control(real["users"][warm], "inverted")


def test_variants_in_the_wrong_list_are_refused(root):
    with pytest.raises(ParamsError, match="llm4msr.enhanced lists 'star'"):
        llm4msr.run(make_params(), root, variant="star")
    with pytest.raises(ParamsError, match="llm4msr.baselines lists 'star_ours'"):
        llm4msr.run_baseline(make_params(), root, variant="star_ours")


def test_a_scenario_without_training_rows_is_an_error(root):
    encoder, arrays = features.load_encoded(root, "ml-100k")
    broken = {**arrays, "valid": {**arrays["valid"], "scenario": arrays["valid"]["scenario"].copy()}}
    broken["valid"]["scenario"][:3] = 1  # OOV: a scenario value the training split never had
    with pytest.raises(DataError, match="valid: 3 row"):
        llm4msr.check_scenarios(encoder, broken, "scenario")


def test_missing_states_name_the_stage_to_run(tmp_path):
    with pytest.raises(DataError, match="run the hidden_states_user stage first"):
        llm4msr.read_states(tmp_path, "ml-100k", "user")


def test_scenario_table_is_laid_out_like_the_paper():
    def entry(a, b, overall):
        return {"per_scenario": {"s1": a, "s2": b}, "auc": overall}

    table = llm4msr.scenario_table({
        "star": entry(0.70, 0.60, 0.68), "star_dn": entry(0.71, 0.59, 0.69), "star_ep": entry(0.69, 0.58, 0.67),
        "star_ours": entry(0.72, 0.57, 0.70), "mmoe": entry(0.5, 0.5, 0.5),
    })  # fmt: skip
    lines = table.strip().splitlines()
    assert lines[0] == "| model | s1 | s2 | overall |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| mmoe", "| star", "| star_DN", "| star_EP", "| star_ours"]
    assert lines[-1] == "| star_ours | **0.7200** | 0.5700 | **0.7000** |"
    assert lines[2] == "| mmoe | **0.5000** | **0.5000** | **0.5000** |"


def test_state_exports_name_a_model_inside_the_project_relative_to_it(root):
    """The tiny Llama lies in the project folder: the exports name it relative to the project root (they
    stay true when the project moves), and the shard store's manifest, shared by every project that uses
    the same weights, names no model folder at all."""
    from safetensors import safe_open

    for kind in ("user", "scenario"):
        path = root / "artifacts" / f"hidden_states_{kind}" / "ml-100k" / "states.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            assert json.loads(handle.metadata()["spec"])["model"] == "llama"
    manifests = list((root / "store").glob("*/manifest.json"))
    assert manifests and all("model" not in json.loads(m.read_text())["spec"] for m in manifests)
