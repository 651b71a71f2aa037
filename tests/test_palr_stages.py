"""PALR's stages on a generated project with a tiny random causal LM: the candidate lists of both
protocols, no valid/test interaction in any prompt or finetuning example, the profile cache across runs,
and every kind of `palr` variant end to end.

Every item's title is one vocabulary word (w<item id>), so the items a prompt names can be read back
from its decoded token ids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from assets import features, palr, palr_lists, prompts, train
from assets.split import split_table
from llm4ctr.errors import ParamsError
from tests.fixtures_models import save_tiny
from tests.fixtures_params import PROMPTS_CONFIG, project_params
from tests.fixtures_tables import make_interactions, write_split_files

K = 5
TINY = {
    "prompts.config": PROMPTS_CONFIG,
    "train.seeds": [1, 2],
    "train.max_epochs": 1,
    "train.patience": 1,
    "train.progress": False,
    "ctr.models": ["dcnv2"],
    "ctr.hparams": {"dcnv2": {"embedding_dim": 4, "num_cross_layers": 1, "hidden_units": [8]}},
    "palr.users": 4,
    "palr.candidates": K,
    "palr.retriever": "popularity",
    "palr.history_len": 5,
    "palr.pointwise_history": 5,
    "palr.shuffles": [1, 2],
    "palr.profile.max_new_tokens": 6,
    "palr.profile.history": 5,
    "palr.finetune.pool": 4,
    "palr.finetune.lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "lr": 1e-2,
                           "weight_decay": 0.0, "epochs": 1, "min_steps": 3, "batch_size": 4, "max_grad_norm": 1.0},
    "palr.cost_users": 2,
    "palr.batch_tokens": 512,
    "palr.device": "cpu",
    "palr.dtype": "float32",
    "palr.num_threads": 1,
    "palr.progress": False,
}  # fmt: skip
ITEM = re.compile(r"\bw(\d+)\b")


def named(text: str) -> list[str]:
    """The item ids a text names (titles are w<item id>)."""
    return ITEM.findall(text)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict, dict]:
    """Split, features, prompts, a trained dcnv2, and the palr_candidates and palr_profiles stages run once."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("palr")
    overrides = {**TINY, "palr.llm": save_tiny(root / "causal", "causal")}
    table = make_interactions(n_users=24, n_items=20, per_user=10)
    table["title"] = ("w" + table["item_id"].astype(str)).astype(table["title"].dtype)
    write_split_files(root, split_table(table, "random", [0.8, 0.1, 0.1], 0))
    params = project_params(overrides)
    features.run(params, root)
    prompts.run(params, root)
    train.run(params, root, "dcnv2")
    palr_lists.candidates(params, root)
    first = palr_lists.profiles(params, root)
    return root, overrides, first


def _read(root: Path, stage: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(root / "artifacts" / stage / "ml-100k" / name)


def _splits(root: Path) -> dict[str, pd.DataFrame]:
    return {s: _read(root, "split", f"{s}.parquet") for s in ("train", "valid", "test")}


def _items_of(frame: pd.DataFrame, user: str, label: int | None = None) -> set[str]:
    rows = frame[frame["user_id"].astype(str) == user]
    if label is not None:
        rows = rows[rows["label"] == label]
    return set(rows["item_id"].astype(str))


def _train_rows(train_split: pd.DataFrame, user: str) -> pd.DataFrame:
    return train_split[train_split["user_id"] == user].sort_values("timestamp", kind="stable")


# ---------------------------------------------------------------------- palr_candidates
def test_candidates_give_each_user_both_protocols(project):
    root, overrides, _ = project
    splits = _splits(root)
    lists = _read(root, "palr_candidates", "candidates.parquet")
    everything = pd.concat(splits.values(), ignore_index=True)
    popularity = splits["train"]["item_id"].value_counts()
    catalogue = set(everything["item_id"])
    users = lists["user_id"].unique()
    assert len(users) == TINY["palr.users"]
    for user in users:
        mine = lists[lists["user_id"] == user].set_index("protocol")
        assert sorted(mine.index) == ["llamarec", "llmrank"]
        test = splits["test"][(splits["test"]["user_id"] == user) & (splits["test"]["label"] == 1)]
        target = test.sort_values("timestamp")["item_id"].iloc[-1]  # the latest test positive
        trained = _items_of(splits["train"], user)
        assert trained and (mine["target"] == target).all()

        llmrank = list(mine.loc["llmrank", "items"])
        assert len(llmrank) == len(set(llmrank)) == K
        assert mine.loc["llmrank", "target_index"] == 0 and llmrank[0] == target
        assert not set(llmrank[1:]) & _items_of(everything, user)  # never interacted with, in any split

        llamarec = list(mine.loc["llamarec", "items"])
        assert len(llamarec) == len(set(llamarec)) == K
        assert not set(llamarec) & trained  # nothing of the training history
        held_out = _items_of(pd.concat([splits["valid"], splits["test"]]), user) - {target}
        assert not set(llamarec) & held_out  # nor another held-out item
        index = mine.loc["llamarec", "target_index"]
        assert index == (llamarec.index(target) if target in llamarec else -1)
        scores = [popularity.get(i, 0) for i in llamarec]
        assert list(mine.loc["llamarec", "retriever_score"]) == scores and scores == sorted(scores, reverse=True)
        rest = catalogue - trained - held_out - set(llamarec)
        assert all(popularity.get(i, 0) <= scores[-1] for i in rest)  # the retriever's top K
    summary = json.loads((root / "artifacts" / "palr_candidates" / "ml-100k" / "summary.json").read_text())
    found = (lists.loc[lists["protocol"] == "llamarec", "target_index"] >= 0).mean()
    assert summary["retriever_hit_rate"] == pytest.approx(found) and summary["candidates"] == K


# ---------------------------------------------------------------------- no leak
def _runner(root: Path, overrides: dict, variant: str) -> palr.Runner:
    """A Runner whose profiles are all "none", so a decoded prompt names only history and candidate items."""
    runner = palr.Runner(project_params(overrides), root, variant)
    runner.__dict__["profiles"] = _read(root, "palr_profiles", "profiles.parquet").assign(profile="none")
    runner.cost, runner.truncated, runner.prompts = {}, 0, 0  # what Runner.run sets up before scoring
    return runner


def _record(prompter, method: str) -> list[tuple]:
    """Wrap ``prompter.<method>`` so that every call's arguments and result are kept."""
    calls, original = [], getattr(prompter, method)

    def spy(*args):
        out = original(*args)
        calls.append((args, out))
        return out

    setattr(prompter, method, spy)
    return calls


def _decode(runner: palr.Runner, ids: list[int]) -> str:
    return runner.lm.tokenizer.decode(ids, skip_special_tokens=True)


def _listwise_parts(runner: palr.Runner, ids: list[int]) -> tuple[list[str], list[str]]:
    """(items named before the candidate block, items of the candidate block) of a decoded listwise prompt."""
    history, _, block = _decode(runner, ids).partition("Candidate")
    return named(history), named(block)


def test_pointwise_prompts_name_only_the_users_training_items(project):
    root, overrides, _ = project
    splits = _splits(root)
    runner = _runner(root, overrides, "pointwise_zeroshot")
    calls = _record(runner.prompter, "pointwise")
    rows, _ = runner.pointwise_probs(1)
    assert len(calls) == TINY["palr.users"] and len(rows)
    for (user, _, items), (prefix, rests, dropped) in calls:
        trained = _train_rows(splits["train"], user)
        recent = trained.tail(TINY["palr.pointwise_history"])
        assert set(named(_decode(runner, prefix))) == set(recent["item_id"]) and dropped == 0
        assert not set(named(_decode(runner, prefix))) & _items_of(splits["test"], user)
        asked = [named(_decode(runner, r)) for r in rests]
        assert asked == [[i] for i in items] and set(items) == _items_of(splits["test"], user)


def test_listwise_prompts_name_only_liked_training_items_and_the_candidates(project):
    root, overrides, _ = project
    splits = _splits(root)
    runner = _runner(root, overrides, "listwise_zeroshot")
    part = runner.lists[runner.lists["protocol"] == "llmrank"].reset_index(drop=True)
    part = part.assign(order=[palr.shuffled(K, 1, i) for i in range(len(part))])
    prompts_, letters = runner.listwise_prompts(part)
    assert len(letters) == K
    for prompt, user, items, order in zip(prompts_, part["user_id"], part["items"], part["order"]):
        history, block = _listwise_parts(runner, prompt.ids)
        liked = _train_rows(splits["train"], user).query("label == 1")["item_id"].tail(TINY["palr.history_len"])
        assert history == liked.tolist()  # oldest first; no valid/test item
        assert block == np.asarray(items)[order].tolist()


def test_listwise_finetuning_examples_hold_out_the_answer(project):
    root, overrides, _ = project
    splits = _splits(root)
    runner = _runner(root, overrides, "listwise_lora4")
    calls = _record(runner.prompter, "listwise")
    examples, letters = runner.listwise_examples(seed=1)
    pool = runner.profiles[runner.profiles["kind"] == "heldout"].set_index("user_id")["held_out"]
    assert len(examples) == len(calls) == 4 and len(letters) == K
    for ((user, _, _, listed), _), (prompt, answer) in zip(calls, examples):
        held_out = pool[user]
        trained = _train_rows(splits["train"], user)
        assert held_out == trained.query("label == 1")["item_id"].iloc[-1]  # the latest training positive
        history, block = _listwise_parts(runner, prompt.ids)
        assert block == listed and block[answer] == held_out
        assert held_out not in history and set(history) <= _items_of(trained, user, label=1)
        assert not set(block) & (set(trained["item_id"]) - {held_out})  # negatives: no training interaction


def test_pointwise_finetuning_examples_come_from_training_rows(project):
    root, overrides, _ = project
    splits = _splits(root)
    runner = _runner(root, overrides, "pointwise_lora6")
    calls = _record(runner.prompter, "pointwise")
    examples, yes_no = runner.pointwise_examples(seed=1)
    assert len(examples) == len(calls) == 6 and yes_no == runner.lm.single_tokens([" Yes", " No"])
    for ((user, _, items), _), (prompt, answer) in zip(calls, examples):
        trained = _train_rows(splits["train"], user)
        (item,) = items
        row = trained[trained["item_id"] == item]
        assert len(row) == 1 and answer == (0 if row["label"].iloc[0] == 1 else 1)
        prefix, rest = _decode(runner, prompt.prefix), _decode(runner, prompt.rest)
        assert named(rest) == [item] and item not in named(prefix)  # the row itself is not in its history
        assert set(named(prefix)) <= set(trained["item_id"]) and named(prefix)


def test_profile_prompts_read_training_only_and_not_the_held_out_item(project):
    root, _, _ = project
    splits = _splits(root)
    table = _read(root, "palr_profiles", "profiles.parquet")
    assert set(table["kind"]) == {"eval", "heldout"} and (table["kind"] == "heldout").sum() == 4
    for row in table.itertuples():
        trained = _items_of(splits["train"], row.user_id)
        mentioned = set(named(row.prompt))
        assert mentioned and mentioned <= trained, row.user_id
        if row.kind == "heldout":
            assert row.held_out in trained and row.held_out not in mentioned


# ---------------------------------------------------------------------- palr_profiles
def test_profiles_second_run_makes_no_llm_call(project, monkeypatch):
    root, overrides, first = project
    table = _read(root, "palr_profiles", "profiles.parquet")
    assert first["generated"] == table["prompt"].nunique() == len(table) and first["cached"] == 0

    def no_llm(params):
        raise AssertionError("palr_profiles loaded the LLM although every profile is cached")

    monkeypatch.setattr(palr_lists, "load_lm", no_llm)
    again = palr_lists.profiles(project_params(overrides), root)
    assert again["generated"] == 0 and again["cached"] == table["prompt"].nunique()
    pd.testing.assert_frame_equal(_read(root, "palr_profiles", "profiles.parquet"), table)


# ---------------------------------------------------------------------- the palr stage
def _summary(root: Path, variant: str) -> dict:
    return json.loads((root / "artifacts" / "palr" / "ml-100k" / variant / "summary.json").read_text())


@pytest.mark.parametrize("variant", ["popularity", "retriever", "dcnv2", "listwise_zeroshot", "listwise_lora2"])
def test_listwise_variants_report_every_protocol_and_shuffle(project, variant):
    root, overrides, _ = project
    palr.run(project_params(overrides), root, variant)
    summary = _summary(root, variant)
    assert set(summary["listwise"]) == {"llmrank", "llamarec", "llamarec_found"}
    found = _read(root, "palr_candidates", "candidates.parquet").query("protocol == 'llamarec'")["target_index"] >= 0
    for protocol, by_shuffle in summary["listwise"].items():
        assert sorted(by_shuffle) == ["1", "2"], protocol
        for figures in by_shuffle.values():
            assert figures["lists"] == (found.sum() if protocol == "llamarec_found" else TINY["palr.users"])
            assert 0 <= figures["hr@1"] <= figures["hr@5"] <= 1 and 0 <= figures["mrr"] <= 1
            if protocol == "llmrank":
                assert figures["hr@5"] == 1.0  # K = 5: the target is always within the top 5
    trained = variant == "dcnv2" or "lora" in variant
    assert summary["seeds"] == ([1, 2] if trained else [1])
    out = root / "artifacts" / "palr" / "ml-100k" / variant
    adapters = sorted(p.parent.name for p in out.glob("seed*/adapter.safetensors"))
    assert adapters == (["seed1", "seed2"] if "lora" in variant else [])
    if variant == "listwise_zeroshot":
        assert summary["prompts"] == 2 * 2 * TINY["palr.users"]  # protocols x shuffles x users


def test_retriever_variant_ranks_by_the_popularity_retriever(project):
    """palr.retriever popularity: the retriever's recorded scores are the training counts."""
    root, overrides, _ = project
    params = project_params(overrides)
    for variant in ("popularity", "retriever"):
        palr.run(params, root, variant)
    assert _summary(root, "popularity")["listwise"] == _summary(root, "retriever")["listwise"]


@pytest.mark.parametrize("variant", ["pointwise_zeroshot", "pointwise_lora4"])
def test_pointwise_variants_predict_exactly_the_evaluation_users_test_rows(project, variant):
    root, overrides, _ = project
    palr.run(project_params(overrides), root, variant)
    out = root / "artifacts" / "palr" / "ml-100k" / variant
    predictions = pd.read_parquet(out / "predictions.parquet")
    test = _splits(root)["test"]
    users = set(_read(root, "palr_candidates", "candidates.parquet")["user_id"])
    expected = sorted(np.flatnonzero(test["user_id"].isin(users)))
    seeds = [1, 2] if "lora" in variant else [1]
    assert sorted(predictions["seed"].unique()) == seeds and (predictions["split"] == "test").all()
    for seed in seeds:
        assert sorted(predictions.loc[predictions["seed"] == seed, "row"]) == expected
    assert ((predictions["prob"] > 0) & (predictions["prob"] < 1)).all()
    summary = _summary(root, variant)
    assert summary["cost"]["sharing"]["max_abs_difference"] < 1e-5
    if "lora" in variant:
        from safetensors.torch import load_file

        assert sorted(summary["finetune"]) == ["1", "2"] and summary["finetune"]["1"]["steps"] == 3
        for seed in seeds:
            state = load_file(str(out / f"seed{seed}" / "adapter.safetensors"))
            assert state and all("lora_" in k for k in state)
            assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())


def test_unknown_variant_names_itself(project):
    root, overrides, _ = project
    with pytest.raises(ParamsError, match="unknown variant 'listwise_fewshot'"):
        palr.run(project_params(overrides), root, "listwise_fewshot")


def test_evaluate_scores_a_sample_next_to_the_base_model_and_all_users_in_the_main_table(project):
    from assets import evaluate
    from models.metrics import auc

    root, overrides, _ = project
    sampled, everyone = "pointwise_zeroshot", "pointwise_lora1"
    palr.run(project_params(overrides), root, sampled)
    palr.run(project_params({**overrides, "palr.users": None, "palr.finetune.lora.min_steps": 1}), root, everyone)
    evaluate.run(project_params(overrides), root)
    results = json.loads((root / "artifacts" / "evaluate" / "ml-100k" / "results.json").read_text())
    assert everyone in results["models"] and everyone not in results["sampled"]  # every test user: the main table
    entry = results["sampled"][sampled]
    rows = pd.read_parquet(root / "artifacts" / "palr" / "ml-100k" / sampled / "predictions.parquet")["row"]
    base = pd.read_parquet(root / "artifacts" / "train" / "ml-100k" / "dcnv2" / "predictions.parquet")
    y = _splits(root)["test"]["label"].to_numpy()
    by_seed = [g.sort_values("row")["prob"].to_numpy() for _, g in base[base["split"] == "test"].groupby("seed")]
    assert entry["rows"] == len(rows) < len(y)
    assert entry["base_auc"] == pytest.approx(np.mean([auc(y[rows], p[rows]) for p in by_seed]), abs=1e-6)
    assert "PALR listwise ranking" in (root / "artifacts" / "evaluate" / "ml-100k" / "results.md").read_text()


def test_a_killed_run_resumes_the_seeds_it_finished(project, monkeypatch):
    root, overrides, _ = project
    params = project_params(overrides)
    variant = "pointwise_lora2"
    out = root / "artifacts" / "palr" / "ml-100k" / variant
    finished = []
    original = palr.Runner.seed_result

    def killed_after_the_first_seed(self, seed):
        if finished:
            raise KeyboardInterrupt("killed")
        finished.append(seed)
        return original(self, seed)

    monkeypatch.setattr(palr.Runner, "seed_result", killed_after_the_first_seed)
    with pytest.raises(KeyboardInterrupt):
        palr.run(params, root, variant)
    assert not out.exists()  # nothing half-written
    monkeypatch.setattr(palr.Runner, "seed_result", original)
    computed = []
    monkeypatch.setattr(palr.Runner, "seed_result", lambda self, seed: computed.append(seed) or original(self, seed))
    palr.run(params, root, variant)
    assert computed == [2] and finished == [1]  # the first seed came back from its work dir
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert sorted(predictions["seed"].unique()) == [1, 2] and (out / "seed1" / "adapter.safetensors").is_file()


# ---------------------------------------------------------------------- two processes
TWO_PROCESS_SCRIPT = """
import json, os, sys
from pathlib import Path

import torch

from assets import palr, palr_lists
from models.distributed import process_group
from tests.fixtures_params import project_params

torch.set_num_threads(1)
root, overrides, rank = Path(sys.argv[1]), json.loads(sys.argv[2]), int(os.environ["RANK"])
writes, write = [], palr.write_json
palr.write_json = lambda value, path: (writes.append(str(path)), write(value, path))
params = project_params(overrides)
with process_group():  # what `llm4ctr stage` joins under torchrun
    profiles = palr_lists.profiles(params, root)
    for variant in sys.argv[3:]:
        palr.run(params, root, variant)
inside = [w for w in writes if w.startswith(str(root))]
(root / f"rank{rank}.json").write_text(json.dumps({"generated": profiles["generated"], "writes": inside}))
"""


def test_palr_stages_with_two_processes_match_one_and_only_rank_0_writes(project, tmp_path):
    """2 gloo ranks share the profiles to write, the lists and users to score and each LoRA batch: the
    same profiles, finetuning losses, ranks and P(Yes) as one process (~40 s)."""
    import shutil

    from tests.fixtures_distributed import torchrun

    root, overrides, _ = project
    variants = ["listwise_lora2", "pointwise_lora4"]
    for variant in variants:
        palr.run(project_params(overrides), root, variant)
    two = tmp_path / "two"
    skipped = {"palr", "palr_profiles"}  # what the two processes make again, with the profile cache
    shutil.copytree(root / "artifacts", two / "artifacts", ignore=lambda d, names: [n for n in names if n in skipped])
    (tmp_path / "two_process.py").write_text(TWO_PROCESS_SCRIPT)
    torchrun(tmp_path / "two_process.py", two, json.dumps(overrides), *variants, timeout=600)

    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    table = _read(root, "palr_profiles", "profiles.parquet")
    assert ranks[0]["generated"] == ranks[1]["generated"] == table["prompt"].nunique()
    assert len(ranks[0]["writes"]) == 3 * len(variants) and ranks[1]["writes"] == []  # 2 seeds' results, summary
    cache = [json.loads(line) for line in (two / "artifacts" / ".work" / "palr_profiles" / "profiles.jsonl").open()]
    assert len(cache) == len({entry["key"] for entry in cache}) == table["prompt"].nunique()
    pd.testing.assert_frame_equal(_read(two, "palr_profiles", "profiles.parquet"), table)

    for variant in variants:
        one_summary, two_summary = _summary(root, variant), _summary(two, variant)
        for seed, fit in one_summary["finetune"].items():
            got = two_summary["finetune"][seed]
            assert (got["examples"], got["steps"]) == (fit["examples"], fit["steps"])
            assert got["loss_first"] == pytest.approx(fit["loss_first"], abs=1e-5)
            assert got["loss_last"] == pytest.approx(fit["loss_last"], abs=1e-5)
        assert two_summary.get("listwise_per_seed") == one_summary.get("listwise_per_seed")
    one_rows = pd.read_parquet(root / "artifacts" / "palr" / "ml-100k" / variants[1] / "predictions.parquet")
    two_rows = pd.read_parquet(two / "artifacts" / "palr" / "ml-100k" / variants[1] / "predictions.parquet")
    pd.testing.assert_frame_equal(two_rows, one_rows, check_exact=False, atol=1e-5, rtol=0)
