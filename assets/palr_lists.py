"""Stages `palr_candidates` and `palr_profiles`: PALR's first stage (candidate retrieval) and the
LLM-written user profiles its ranking prompt reads.

`palr_candidates` draws ``palr.users`` evaluation users (seeded; users with a test positive and a
training history; null: all) and gives each one target, their latest test positive, in two lists of
``palr.candidates`` (K) items:

    llmrank   the target and K-1 random items the user never interacted with (LLMRank's protocol)
    llamarec  the retriever's top-K among the items the user has no training interaction with (and no
              other held-out one): the target is in the list or not (LlamaRec's protocol)

The retriever (``palr.retriever``) is ``popularity`` (training counts) or a learn tower (``id``,
``learn``: artifacts/learn_tower, the user embedding read from the last training items). Writes
artifacts/palr_candidates/<ds>/candidates.parquet (canonical order: llmrank target first, llamarec by
retriever score) and summary.json (the retriever's hit rate).

`palr_profiles` has the LLM write a profile of every evaluation user from their training history, and
of ``palr.finetune.pool`` training users from their training history without their latest training
positive (the held-out answer of their listwise finetuning example: it must not be in the profile).
Greedy decoding, cached by content in artifacts/.work/palr_profiles/ (resumable; models/palr/profiles.py).
Writes artifacts/palr_profiles/<ds>/profiles.parquet and summary.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.palr_inputs import (
    CANDIDATES_STAGE,
    PROFILES_STAGE,
    Data,
    load_lm,
    positive_int,
    read_candidates,
    without,
)  # fmt: skip
from assets.registry import get_stage
from assets.runs import SUMMARY, seeds
from assets.tables import write_json, write_table
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir

PROFILE_CACHE = "artifacts/.work/palr_profiles/profiles.jsonl"


def evaluation_users(data: Data) -> pd.DataFrame:
    """The sampled evaluation users and their target: user_id, target (latest test positive)."""
    test = data.splits["test"]
    positives = test[test["label"] == 1].sort_values(["timestamp", "item_id"], kind="stable")
    targets = positives.groupby("user_id", sort=True)["item_id"].last()
    targets = targets[targets.index.isin(data.train_by_user)]
    n = positive_int(data.params, "palr.users", allow_none=True)
    rng = np.random.default_rng(int(data.params.get_path("palr.user_seed")))
    if n is not None and n < len(targets):
        targets = targets.iloc[np.sort(rng.choice(len(targets), n, replace=False))]
    return pd.DataFrame({"user_id": targets.index.astype(str), "target": targets.astype(str).to_numpy()})


def retriever_scores(data: Data, users: list[str]) -> np.ndarray:
    """[users, items] scores of ``palr.retriever`` over ``data.titles.index`` (higher = retrieved first)."""
    name = str(data.params.get_path("palr.retriever"))
    if name == "popularity":
        return np.tile(data.popularity.to_numpy(dtype=np.float64), (len(users), 1))
    from assets.learn import TOWERS, Catalogue, interactions, tower_config
    from models.learn.sequences import UserSequences, histories_before
    from models.learn.train_tower import embed_items, embed_users, load_tower

    if name not in TOWERS:
        raise ParamsError(
            f"{data.params.source}: palr.retriever must be popularity or a learn tower ({', '.join(TOWERS)}), "
            f"got {name!r}"
        )
    catalogue = Catalogue.of(data.splits)
    folder = artifact_dir(data.root, "learn_tower", data.dataset) / name / f"seed{seeds(data.params)[0]}"
    if not folder.is_dir():
        raise DataError(f"{folder}: not found; run `llm4ctr stage learn_tower --variant {name}` (palr.retriever)")
    tower = load_tower(folder)
    train = interactions(data.params, data.train)
    seqs = UserSequences.build(train["user_id"].astype(str), catalogue.item_indices(train), train["timestamp"])
    history = histories_before(
        seqs, users, np.full(len(users), np.iinfo(np.int64).max), tower_config(data.params, 0).history_len
    )
    scores = (embed_users(tower, history) @ embed_items(tower, len(catalogue.items)).T).numpy()
    columns = [catalogue.item_index[str(i)] for i in data.titles.index]
    return scores[:, columns].astype(np.float64)


def candidates(params: Params, root: Path) -> dict[str, Any]:
    """Stage palr_candidates: both protocols' lists for the evaluation users."""
    data = Data(params, root)
    k = positive_int(params, "palr.candidates")
    items = data.titles.index.to_numpy(dtype=object)
    if k > len(items):
        raise ParamsError(f"{params.source}: palr.candidates is {k}, the catalogue has {len(items)} items")
    users = evaluation_users(data)
    seen = data.everything.groupby("user_id")["item_id"].agg(set)
    scores = retriever_scores(data, users["user_id"].tolist())
    position = {item: i for i, item in enumerate(items)}
    rng = np.random.default_rng(int(params.get_path("palr.user_seed")))
    rows = []
    for u, (user, target) in enumerate(zip(users["user_id"], users["target"])):
        interacted = seen[user]
        unseen = np.flatnonzero([item not in interacted for item in items])
        negatives = items[rng.choice(unseen, k - 1, replace=False)].tolist()
        llmrank = [target, *negatives]
        trained = set(data.train_by_user[user]["item_id"])
        allowed = np.array([(item not in interacted or item == target) and item not in trained for item in items])
        masked = np.where(allowed, scores[u], -np.inf)
        top = np.argsort(-masked, kind="stable")[:k]
        llamarec = items[top].tolist()
        for protocol, listed in (("llmrank", llmrank), ("llamarec", llamarec)):
            rows.append(
                {
                    "user_id": user,
                    "protocol": protocol,
                    "target": target,
                    "items": listed,
                    "retriever_score": [float(scores[u, position[i]]) for i in listed],
                    "target_index": listed.index(target) if target in listed else -1,
                }
            )
    table = pd.DataFrame(rows)
    found = table.loc[table["protocol"] == "llamarec", "target_index"].ge(0)
    summary = {
        "users": len(users),
        "candidates": k,
        "retriever": str(params.get_path("palr.retriever")),
        "retriever_hit_rate": round(float(found.mean()), 6) if len(found) else float("nan"),
        "params_digest": params.digest(get_stage(CANDIDATES_STAGE).params),
    }
    with atomic_dir(artifact_dir(root, CANDIDATES_STAGE, data.dataset)) as tmp:
        write_table(table, tmp / "candidates.parquet")
        write_json(summary, tmp / SUMMARY)
    return summary


def finetune_pool(data: Data) -> pd.DataFrame:
    """``palr.finetune.pool`` seeded training users with at least two training positives, each with the
    held-out item of their listwise example (their latest training positive): user_id, held_out."""
    n = int(data.params.get_path("palr.finetune.pool"))
    eligible = sorted(u for u, rows in data.train_by_user.items() if int(rows["label"].sum()) >= 2)
    rng = np.random.default_rng(int(data.params.get_path("palr.user_seed")) + 1)
    chosen = [eligible[i] for i in np.sort(rng.choice(len(eligible), min(n, len(eligible)), replace=False))]
    held = [data.train_by_user[u].loc[lambda r: r["label"] == 1, "item_id"].iloc[-1] for u in chosen]
    return pd.DataFrame({"user_id": chosen, "held_out": [str(h) for h in held]})


def profiles(params: Params, root: Path) -> dict[str, Any]:
    """Stage palr_profiles: the LLM's profile of each evaluation user and finetuning-pool user."""
    from models.palr import ProfileCache

    data = Data(params, root)
    users = read_candidates(root, data.dataset).drop_duplicates("user_id")["user_id"].astype(str).tolist()
    pool = finetune_pool(data)
    rows = [
        {"user_id": u, "kind": "eval", "held_out": "", "prompt": data.profile_prompt(u, data.train_by_user[u])}
        for u in users
    ]
    rows += [
        {
            "user_id": u,
            "kind": "heldout",
            "held_out": h,
            "prompt": data.profile_prompt(u, without(data.train_by_user[u], h)),
        }
        for u, h in zip(pool["user_id"], pool["held_out"])
    ]
    table = pd.DataFrame(rows, columns=["user_id", "kind", "held_out", "prompt"])
    max_new = positive_int(params, "palr.profile.max_new_tokens")
    lm = None

    def generate(prompt: str) -> tuple[str, int]:
        nonlocal lm
        lm = lm or load_lm(params)
        return lm.generate(prompt, max_new)

    from assets.hidden_states import role_model
    from assets.pretrained import fingerprint

    model_id = fingerprint(role_model(params, str(params.get_path("palr.llm"))))
    cache = ProfileCache(Path(root) / PROFILE_CACHE, model_id, {"max_new_tokens": max_new, "decoding": "greedy"})
    started = time.perf_counter()
    made = cache.fill(table["prompt"], generate, progress=bool(params.get_path("palr.progress")))
    seconds = time.perf_counter() - started
    table["profile"] = [made[p]["profile"] for p in table["prompt"]]
    table["prompt_tokens"] = [int(made[p]["prompt_tokens"]) for p in table["prompt"]]
    summary = {
        "eval_users": len(users),
        "pool_users": len(pool),
        "generated": cache.calls,
        "cached": int(table["prompt"].nunique()) - cache.calls,
        "seconds": round(seconds, 2),
        "seconds_per_profile": round(seconds / cache.calls, 3) if cache.calls else None,
        "prompt_tokens_mean": round(float(table["prompt_tokens"].mean()), 1) if len(table) else 0.0,
        "model": model_id,
        "params_digest": params.digest(get_stage(PROFILES_STAGE).params),
    }
    with atomic_dir(artifact_dir(root, PROFILES_STAGE, data.dataset)) as tmp:
        write_table(table, tmp / "profiles.parquet")
        write_json(summary, tmp / SUMMARY)
    return summary
