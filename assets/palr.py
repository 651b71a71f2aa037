"""Stage `palr`: the LLM as the recommender (PALR), its two open protocols (LLMRank / LlamaRec
listwise, TALLRec pointwise) and the CTR baselines ranking the same lists (assets/palr_lists.py makes
the lists and the profiles). One instance per ``palr.variants``:

    popularity, retriever         the lists ranked by training count / by the retriever's score
    <zoo model> (e.g. dcnv2)      the lists ranked by the zoo model's click probability (train stage, per seed)
    listwise_zeroshot             the LLM ranks each list from the profile, the last ``history_len``
                                  liked titles and the labelled candidates: letter logits after "Answer: ("
    listwise_lora<N|all>          the same after LoRA finetuning on N training users' held-out positive
                                  among K-1 random items (all: the whole pool)
    pointwise_zeroshot            P(Yes) for every test row of the evaluation users ("will the user like
                                  X?" after their ``pointwise_history`` most recent training interactions)
    pointwise_lora<N|all>         the same after LoRA on N seeded training rows (all: ``finetune.all_rows``)

Listwise lists are scored under each seed of ``palr.shuffles`` (the candidate order is permuted;
position bias shows as a difference between them); figures: HR/NDCG@1/5/10/20 and MRR, llamarec also
over the users whose target the retriever found (``llamarec_found``). Pointwise predictions cover the
evaluation users' test rows: the evaluate stage scores them next to the base model on the same rows.
Finetuned variants run once per ``train.seeds`` seed (examples drawn and adapters initialised by it).
Nothing of valid/test enters a prompt, a profile or a finetuning example. Writes summary.json (figures,
cost, truncated prompts), predictions.parquet (pointwise) and seed<k>/adapter.safetensors (LoRA).

Under torchrun (``llm4ctr stage palr --nproc N``) the LLM's lists and pointwise users are sharded over the
processes and their scores gathered in order, LoRA finetuning shares each batch (models/palr/lora.py),
and rank 0 alone measures the prefix-sharing cost and writes; the costs are the run's wall time.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.palr_inputs import PROFILES_STAGE, Data, Prompter, load_lm, positive_int, read_candidates, without
from assets.registry import get_stage
from assets.runs import PREDICTIONS, SUMMARY, predictions_frame, resume_key, seeds, work_dir
from assets.schema import DATASET_FEATURES
from assets.tables import read_table, write_json, write_table
from llm4ctr.atomic import atomic_dir, save_tensors
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir, portable
from models.distributed import Processes

STAGE = "palr"
ADAPTER = "adapter.safetensors"
PROTOCOLS = ("llmrank", "llamarec")
BASELINES = ("popularity", "retriever")
VARIANT = re.compile(r"^(listwise|pointwise)_(zeroshot|lora([1-9]\d*|all))$")


def parse_variant(params: Params, variant: str) -> tuple[str, int | str | None]:
    """``variant`` -> (kind, shots): kind baseline / zoo / listwise / pointwise; shots 0 (zero-shot), N or "all"."""
    if variant in BASELINES:
        return "baseline", None
    if variant in params.get_path("ctr.models"):
        return "zoo", None
    match = VARIANT.match(variant)
    if not match:
        raise ParamsError(
            f"{params.source}: palr.variants: unknown variant '{variant}'; choose from {', '.join(BASELINES)}, "
            "a zoo model of ctr.models, or (listwise|pointwise)_(zeroshot|lora<N>|loraall)"
        )
    mode, training, shots = match.groups()
    return mode, 0 if training == "zeroshot" else (shots if shots == "all" else int(shots))


def shuffled(n: int, shuffle: int, user_index: int) -> np.ndarray:
    """The candidate order of one list under shuffle seed ``shuffle`` (a permutation of range(n))."""
    return np.random.default_rng([shuffle, user_index]).permutation(n)


def listwise_figures(
    lists: pd.DataFrame, score: Callable[[pd.DataFrame], np.ndarray], shuffles: list[int]
) -> dict[str, Any]:
    """protocol -> shuffle -> rank metrics, for ``score(lists)`` -> [lists, K] scores in each list's
    ``order`` (the shuffled one); llamarec also over the lists that hold the target (``llamarec_found``)."""
    from models.palr import rank_metrics, target_ranks

    out: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        part = lists[lists["protocol"] == protocol].reset_index(drop=True)
        for shuffle in shuffles:
            orders = [shuffled(len(items), shuffle, i) for i, items in enumerate(part["items"])]
            target = np.array(
                [np.flatnonzero(o == t)[0] if t >= 0 else -1 for o, t in zip(orders, part["target_index"])]
            )
            ranks = target_ranks(score(part.assign(order=orders)), target)
            out.setdefault(protocol, {})[str(shuffle)] = rank_metrics(ranks)
            if protocol == "llamarec":
                out.setdefault("llamarec_found", {})[str(shuffle)] = rank_metrics(ranks[target >= 0])
    return out


def in_order(part: pd.DataFrame, column: str) -> np.ndarray:
    """[lists, K] of a list-valued column, each row permuted by its list's ``order``."""
    return np.array([np.asarray(values)[order] for values, order in zip(part[column], part["order"])])


def mean_figures(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The listwise figures averaged over seeds (same protocols, shuffles and keys in each)."""
    first = per_seed[0]
    return {
        protocol: {
            shuffle: {
                k: v if k == "lists" else round(float(np.mean([s[protocol][shuffle][k] for s in per_seed])), 6)
                for k, v in metrics.items()
            }
            for shuffle, metrics in by_shuffle.items()
        }
        for protocol, by_shuffle in first.items()
    }


class Runner:
    """One `palr` variant: the inputs it reads and how it scores."""

    def __init__(self, params: Params, root: Path, variant: str):
        self.params, self.root, self.variant = params, Path(root), variant
        self.kind, self.shots = parse_variant(params, variant)
        self.data = Data(params, root)
        self.lists = read_candidates(root, self.data.dataset)
        self.shuffles = [int(s) for s in params.get_path("palr.shuffles")]
        if not self.shuffles:
            raise ParamsError(f"{params.source}: palr.shuffles must list at least one seed")
        self.cost: dict[str, list[float]] = {}  # seconds, lists and tokens of the current seed's LLM calls
        self.truncated, self.prompts = 0, 0
        self.adapters: dict[int, dict] = {}  # seed -> trained LoRA weights
        self.processes = Processes.from_env()

    @cached_property
    def profiles(self) -> pd.DataFrame:
        path = artifact_dir(self.root, PROFILES_STAGE, self.data.dataset) / "profiles.parquet"
        if not path.is_file():
            raise DataError(f"{path}: not found; run the palr_profiles stage first")
        return read_table(path)

    @cached_property
    def eval_profiles(self) -> dict[str, str]:
        """user -> the profile written from their whole training history."""
        rows = self.profiles[self.profiles["kind"] == "eval"]
        return dict(zip(rows["user_id"].astype(str), rows["profile"].astype(str)))

    def profile_of(self, user: str) -> str:
        if user not in self.eval_profiles:
            raise DataError(f"palr_profiles has no eval profile of user {user}; re-run the palr_profiles stage")
        return self.eval_profiles[user]

    def liked(self, rows: pd.DataFrame) -> list[str]:
        return rows.loc[rows["label"] == 1, "item_id"].tail(positive_int(self.params, "palr.history_len")).tolist()

    # ---- baselines
    def baseline_scores(self, part: pd.DataFrame, seed: int | None) -> np.ndarray:
        if self.variant == "popularity":
            pop = self.data.popularity
            return np.array(
                [
                    pop[np.asarray(items)[order]].to_numpy(dtype=float)
                    for items, order in zip(part["items"], part["order"])
                ]
            )
        if self.variant == "retriever":
            return in_order(part, "retriever_score")
        return self.zoo_scores(part, seed)

    @cached_property
    def entities(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(user rows, item rows) of the normalized table: the zoo model's record fields."""
        columns = DATASET_FEATURES[self.data.dataset]
        every = self.data.everything
        users = every.drop_duplicates("user_id").set_index("user_id")[["scenario", *columns.user]]
        items = every.drop_duplicates("item_id").set_index("item_id")[list(columns.item)]
        return users, items

    def pair_frame(self, users: list[str], items: list[str]) -> pd.DataFrame:
        """Normalized-table rows for (user, item) pairs: what the zoo model scores."""
        user_rows, item_rows = self.entities
        frame = pd.concat([user_rows.loc[users].reset_index(), item_rows.loc[items].reset_index(drop=False)], axis=1)
        return frame.assign(rating=0.0, label=0, timestamp=0)

    def zoo_scores(self, part: pd.DataFrame, seed: int) -> np.ndarray:
        ordered = [np.asarray(items)[order].tolist() for items, order in zip(part["items"], part["order"])]
        users = [u for u, items in zip(part["user_id"], ordered) for _ in items]
        probs = self.zoo_predictor(self.variant, seed).predict_frame(
            self.pair_frame(users, [i for items in ordered for i in items])
        )
        return probs.reshape(len(part), -1)

    # ---- the LLM, listwise
    def listwise_prompts(self, part: pd.DataFrame):
        prompts, letters = [], None
        for user, items, order in zip(part["user_id"], part["items"], part["order"]):
            ordered = np.asarray(items)[order].tolist()
            prompt, letters = self.prompter.listwise(
                user, self.profile_of(user), self.liked(self.data.history(user)), ordered
            )
            prompts.append(prompt)
        return prompts, letters

    @cached_property
    def lm(self):
        return load_lm(self.params)

    @cached_property
    def prompter(self) -> Prompter:
        return Prompter(self.data, self.lm)

    def listwise_llm_scores(self, part: pd.DataFrame, seed: int) -> np.ndarray:
        from models.palr import listwise_scores

        prompts, letters = self.listwise_prompts(part)
        started = time.perf_counter()
        mine = self.processes.part(np.arange(len(prompts)))
        scored = listwise_scores(
            self.lm, [prompts[i] for i in mine], letters, positive_int(self.params, "palr.batch_tokens")
        )
        scores = np.zeros((len(prompts), len(letters)), dtype=np.float32)
        for rows, values in self.processes.gather((mine, scored)):
            scores[rows] = values
        self.cost.setdefault("listwise_seconds", []).append(time.perf_counter() - started)
        self.cost.setdefault("listwise_lists", []).append(len(prompts))
        self.cost.setdefault("listwise_tokens", []).extend(len(p) for p in prompts)
        self.truncated += sum(p.dropped > 0 for p in prompts)
        self.prompts += len(prompts)
        return scores

    # ---- finetuning
    def listwise_examples(self, seed: int):
        """(Prompt, letter index) per finetuning user: their held-out training positive among K-1 random
        items they have no training interaction with, shuffled by ``seed``."""
        pool = self.profiles[self.profiles["kind"] == "heldout"]
        n = len(pool) if self.shots == "all" else self.shots
        if n > len(pool):
            raise ParamsError(
                f"{self.params.source}: {self.variant} needs {n} finetuning users, palr.finetune.pool gives {len(pool)}"
            )
        rng = np.random.default_rng(seed)
        k = positive_int(self.params, "palr.candidates")
        items = self.data.titles.index.to_numpy(dtype=object)
        examples, letters = [], None
        for _, row in pool.iloc[np.sort(rng.choice(len(pool), n, replace=False))].iterrows():
            history = self.data.history(row["user_id"])
            rows, trained = without(history, row["held_out"]), set(history["item_id"])
            unseen = np.flatnonzero([i not in trained for i in items])
            listed = np.array([row["held_out"], *items[rng.choice(unseen, k - 1, replace=False)]], dtype=object)
            order = rng.permutation(k)
            prompt, letters = self.prompter.listwise(
                row["user_id"], row["profile"], self.liked(rows), listed[order].tolist()
            )
            examples.append((prompt, int(np.flatnonzero(order == 0)[0])))
        return examples, letters

    def pointwise_examples(self, seed: int):
        """(Prompt, 0 for Yes / 1 for No) for seeded training rows; each prompt's history is the user's
        most recent other training interactions (the row itself left out)."""
        from models.palr import Prompt

        train = self.data.train.reset_index(drop=True)
        cap = positive_int(self.params, "palr.finetune.all_rows")
        n = min(cap, len(train)) if self.shots == "all" else self.shots
        if n > len(train):
            raise ParamsError(f"{self.params.source}: {self.variant} asks for {n} rows, train has {len(train)}")
        rng = np.random.default_rng(seed)
        examples = []
        for index in np.sort(rng.choice(len(train), n, replace=False)):
            row = train.iloc[index]
            user_rows = self.data.train_by_user[str(row["user_id"])]
            others = user_rows[
                ~((user_rows["item_id"] == row["item_id"]) & (user_rows["timestamp"] == row["timestamp"]))
            ]
            prefix, rests, _ = self.prompter.pointwise(str(row["user_id"]), others, [row["item_id"]])
            examples.append((Prompt(prefix, rests[0]), 0 if int(row["label"]) == 1 else 1))
        return examples, self.prompter.yes_no

    def finetune(self, seed: int) -> dict[str, Any]:
        from models.palr import LoraConfig, finetune
        from models.palr.lora import adapter_state

        examples, tokens = (self.listwise_examples if self.kind == "listwise" else self.pointwise_examples)(seed)
        settings = dict(self.params.get_path("palr.finetune.lora"))
        settings["target_modules"] = tuple(settings.get("target_modules", LoraConfig.target_modules))
        config = LoraConfig.from_dict(settings)
        started = time.perf_counter()
        losses = finetune(self.lm, examples, tokens, config, seed, processes=self.processes)
        self.adapters[seed] = adapter_state(self.lm)
        return {
            "examples": len(examples),
            "positives": int(sum(label == 0 for _, label in examples)) if self.kind == "pointwise" else None,
            "steps": len(losses),
            "loss_first": round(float(np.mean(losses[:5])), 6),
            "loss_last": round(float(np.mean(losses[-5:])), 6),
            "seconds": round(time.perf_counter() - started, 2),
        }

    # ---- the LLM, pointwise
    @cached_property
    def pointwise_groups(self) -> list[tuple[str, np.ndarray, list[int], list[list[int]], int]]:
        """(user, their test rows, prefix ids, one rest per row, history items dropped) for every scored
        user: the evaluation users, or every user of the test split when ``palr.users`` is null."""
        test = self.data.splits["test"].reset_index(drop=True)
        if self.params.get_path("palr.users") is None:
            users = sorted(test["user_id"].astype(str).unique())
        else:
            users = self.lists["user_id"].drop_duplicates().astype(str).tolist()
        by_user = test.groupby(test["user_id"].astype(str)).indices
        groups = []
        for user in users:
            rows = np.sort(by_user.get(user, np.zeros(0, dtype=int)))
            items = test.loc[rows, "item_id"].tolist()
            groups.append((user, rows, *self.prompter.pointwise(user, self.data.history(user), items)))
        return groups

    def pointwise_probs(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(test-row indices, P(Yes)) for every test row of the scored users."""
        from models.palr import pointwise_scores

        batch = positive_int(self.params, "palr.batch_tokens")
        groups = self.pointwise_groups
        started = time.perf_counter()
        mine = self.processes.part(np.arange(len(groups)))
        scored = [pointwise_scores(self.lm, *groups[g][2:4], self.prompter.yes_no, True, batch) for g in mine]
        probs: list[np.ndarray] = [np.zeros(0)] * len(groups)
        for indices, values in self.processes.gather((mine, scored)):
            for g, value in zip(indices, values):
                probs[g] = value
        self.cost.setdefault("pointwise_seconds", []).append(time.perf_counter() - started)
        for _, _, prefix, rests, dropped in groups:
            self.truncated += int(dropped > 0)
            self.prompts += 1
            self.cost.setdefault("pointwise_tokens", []).extend(len(prefix) + len(r) for r in rests)
        return np.concatenate([g[1] for g in groups]), np.concatenate(probs)

    def sharing_cost(self, seed: int) -> dict[str, Any]:
        """Pointwise ms per record with and without prefix sharing, and the zoo base model's, on the test
        rows of the first ``palr.cost_users`` scored users (same machine, same run; the scores must agree)."""
        from models.palr import pointwise_scores

        groups = self.pointwise_groups[: positive_int(self.params, "palr.cost_users")]
        batch = positive_int(self.params, "palr.batch_tokens")
        seconds = {True: 0.0, False: 0.0}
        gap, records = 0.0, 0
        for _, _, prefix, rests, _ in groups:
            got = {}
            for share in (False, True):
                started = time.perf_counter()
                got[share] = pointwise_scores(self.lm, prefix, rests, self.prompter.yes_no, share, batch)
                seconds[share] += time.perf_counter() - started
            gap = max(gap, float(np.abs(got[True] - got[False]).max()) if len(rests) else 0.0)
            records += len(rests)
        base = str(self.params.get_path("evaluate.base_model"))
        frame = self.data.splits["test"].reset_index(drop=True).iloc[np.concatenate([g[1] for g in groups])]
        zoo_ms = None
        if base in self.params.get_path("ctr.models"):
            predictor = self.zoo_predictor(base, seed)
            started = time.perf_counter()
            predictor.predict_frame(frame)
            zoo_ms = round(1000 * (time.perf_counter() - started) / max(len(frame), 1), 4)
        return {
            "users": len(groups),
            "records": records,
            "ms_per_record_shared": round(1000 * seconds[True] / max(records, 1), 3),
            "ms_per_record_unshared": round(1000 * seconds[False] / max(records, 1), 3),
            "speedup": round(seconds[False] / seconds[True], 3) if seconds[True] else None,
            "max_abs_difference": gap,
            f"{base}_ms_per_record": zoo_ms,
        }

    def zoo_predictor(self, name: str, seed: int):
        from models.predictor import Predictor

        folder = artifact_dir(self.root, "train", self.data.dataset) / name / f"seed{seed}"
        if not folder.is_dir():
            raise DataError(f"{folder}: not found; run `llm4ctr stage train --variant {name}` (seed {seed})")
        return Predictor.load(folder, artifact_dir(self.root, "features", self.data.dataset))

    # ---- the run
    def seed_result(self, seed: int) -> dict[str, Any]:
        """One seed's work: finetuning (a fresh LM and adapters), then the listwise figures or the pointwise
        rows and probabilities, with what the scoring cost."""
        self.cost, self.truncated, self.prompts = {}, 0, 0
        result: dict[str, Any] = {}
        if self.kind in ("listwise", "pointwise") and self.shots != 0:
            self.__dict__.pop("lm", None)  # adapters start from the base weights each seed
            self.__dict__.pop("prompter", None)
            result["fit"] = self.finetune(seed)
        if self.kind == "pointwise":
            rows, probs = self.pointwise_probs(seed)
            result["rows"], result["probs"] = rows.tolist(), probs.tolist()
            if seed == seeds(self.params)[0] and self.processes.is_main:  # once per variant: costs 3x a scoring
                result["sharing"] = self.sharing_cost(seed)
        else:
            scorer = self.listwise_llm_scores if self.kind == "listwise" else self.baseline_scores
            result["figures"] = listwise_figures(self.lists, lambda part: scorer(part, seed), self.shuffles)
        if self.kind in ("listwise", "pointwise"):
            result["model"] = portable(self.lm.model_id, self.root)
        return {**result, "cost": self.cost, "truncated": self.truncated, "prompts": self.prompts}

    def run(self) -> dict[str, Any]:
        """Every seed (one for the variants that do not train), each resumed from its work dir when a killed
        run finished it; then the summary, predictions and adapters, written atomically."""
        from safetensors.torch import load_file

        trained = self.kind in ("zoo",) or (self.kind in ("listwise", "pointwise") and self.shots != 0)
        run_seeds = seeds(self.params) if trained else seeds(self.params)[:1]
        key = resume_key(self.params, self.root, STAGE, self.variant)
        results: dict[int, dict[str, Any]] = {}
        for seed in run_seeds:
            work = work_dir(self.root, STAGE, self.data.dataset, self.variant, seed, key)
            if self.processes.broadcast((work / "result.json").is_file()):  # rank 0's folder decides
                if self.processes.is_main:
                    results[seed] = json.loads((work / "result.json").read_text(encoding="utf-8"))
                    if (work / ADAPTER).is_file():
                        self.adapters[seed] = load_file(str(work / ADAPTER))
                continue
            results[seed] = self.seed_result(seed)
            if self.processes.is_main:  # the others' results are rank 0's (gathered scores, averaged steps)
                if seed in self.adapters:
                    save_tensors(self.adapters[seed], work / ADAPTER)
                write_json(results[seed], work / "result.json")
            self.processes.barrier()
        results = self.processes.broadcast(results)  # resumed seeds were read by rank 0 alone
        done = list(results.values())
        summary: dict[str, Any] = {
            "variant": self.variant,
            "kind": self.kind,
            "shots": self.shots,
            "seeds": run_seeds,
            "users": int(self.lists["user_id"].nunique()),
            "prompts": sum(r["prompts"] for r in done),
            "truncated_prompts": sum(r["truncated"] for r in done),
            "finetune": {str(seed): r["fit"] for seed, r in results.items() if "fit" in r},
            "params_digest": self.params.digest(get_stage(STAGE).params),
        }
        if self.kind != "pointwise":
            per_seed = [r["figures"] for r in done]
            summary["listwise"] = mean_figures(per_seed)
            summary["listwise_per_seed"] = dict(zip(map(str, run_seeds), per_seed))
        if self.kind in ("listwise", "pointwise"):
            cost: dict[str, list] = {}
            for r in done:
                for name, values in r["cost"].items():
                    cost.setdefault(name, []).extend(values)
            summary["model"] = done[0]["model"]
            summary["cost"] = cost_figures(cost, next((r["sharing"] for r in done if "sharing" in r), None))
        out = artifact_dir(self.root, STAGE, self.data.dataset) / self.variant
        with atomic_dir(out) as tmp:
            if self.kind == "pointwise":
                records = [(seed, "test", r["probs"], r["rows"]) for seed, r in results.items()]
                write_table(predictions_frame(records), tmp / PREDICTIONS)
            for seed, state in self.adapters.items():
                (tmp / f"seed{seed}").mkdir()
                save_tensors(state, tmp / f"seed{seed}" / ADAPTER)
            write_json(summary, tmp / SUMMARY)
        return summary


def cost_figures(cost: dict[str, list], sharing: dict | None) -> dict[str, Any]:
    """Tokens and milliseconds per listwise list and pointwise record over every seed's scoring calls,
    and the prefix-sharing measurement."""
    figures: dict[str, Any] = {}
    if "listwise_lists" in cost:
        lists = sum(cost["listwise_lists"])
        figures["listwise_tokens_per_list"] = round(float(np.mean(cost["listwise_tokens"])), 1)
        figures["listwise_ms_per_list"] = round(1000 * sum(cost["listwise_seconds"]) / max(lists, 1), 2)
    if "pointwise_tokens" in cost:
        figures["pointwise_tokens_per_record"] = round(float(np.mean(cost["pointwise_tokens"])), 1)
        records = len(cost["pointwise_tokens"])
        figures["pointwise_ms_per_record"] = round(1000 * sum(cost["pointwise_seconds"]) / max(records, 1), 3)
    if sharing:
        figures["sharing"] = sharing
    return figures


def run(params: Params, root: Path, variant: str) -> dict[str, Any]:
    """Stage palr: rank / score with ``variant``; write summary.json (and pointwise predictions)."""
    summary = Runner(params, root, variant).run()
    return {k: v for k, v in summary.items() if k in ("variant", "users", "prompts", "truncated_prompts")}
