"""What the PALR stages share: the splits, items and users as the prompts write them, the causal LM,
and the prompt builder (listwise and pointwise token ids, histories cut oldest-first to fit).

Templates and words come from the ``palr`` section of the prompts config (configs/prompts.yaml); every
history is read from the TRAINING split only.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pandas as pd

from assets.prompts import formatted, load_config, placeholders, render
from assets.split import load_splits
from assets.tables import read_table
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params
from llm4ctr.paths import artifact_dir

CANDIDATES_STAGE = "palr_candidates"
PROFILES_STAGE = "palr_profiles"


def positive_int(params: Params, key: str, allow_none: bool = False) -> int | None:
    value = params.get_path(key)
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ParamsError(f"{params.source}: {key} must be a positive integer{' or null' * allow_none}, got {value!r}")
    return value


class Data:
    """What every PALR stage reads: the splits, item titles and user attributes as words, the config."""

    def __init__(self, params: Params, root: Path):
        self.params, self.root = params, Path(root)
        self.dataset = params.get_path("data.name")
        self.config = load_config(params, root)
        self.splits = load_splits(root, self.dataset)
        self.train = self.splits["train"]

    def text(self, key: str) -> str:
        return self.config.get_path(f"palr.{key}")

    @cached_property
    def everything(self) -> pd.DataFrame:
        return pd.concat([self.splits[s] for s in ("train", "valid", "test")], ignore_index=True)

    @cached_property
    def titles(self) -> pd.Series:
        """item_id -> the item as the prompts write it (``palr.item``)."""
        items = self.everything.drop_duplicates("item_id").set_index("item_id")
        template = self.text("item")
        words = formatted(items, placeholders(template), self.config, "palr.item", self.config.get_path("missing"))
        where = f"{self.config.source}: palr.item"
        return pd.Series([render(template, where, **row) for row in words.to_dict("records")], index=items.index)

    @cached_property
    def attributes(self) -> pd.Series:
        """user_id -> the user's attributes ("Age: 24 Gender: male ..."; the prompts stage's profile kind)."""
        table = read_table(artifact_dir(self.root, "prompts", self.dataset) / "profile.parquet")
        text = table["text"].where(table["text"].str.len() > 0, self.text("none"))
        return pd.Series(text.to_numpy(), index=table["user_id"].astype(str))

    @cached_property
    def popularity(self) -> pd.Series:
        """item_id -> training interactions (0 for items train never saw)."""
        counts = self.train["item_id"].value_counts()
        return counts.reindex(self.titles.index, fill_value=0)

    @cached_property
    def train_by_user(self) -> dict[str, pd.DataFrame]:
        """user -> their training rows, oldest first (ties in time keep the table's order)."""
        ordered = self.train.sort_values("timestamp", kind="stable")
        return {str(u): rows for u, rows in ordered.groupby("user_id", sort=False)}

    def history(self, user: str) -> pd.DataFrame:
        """The user's training rows, oldest first (none for a user the training split never saw)."""
        return self.train_by_user.get(user, self.train.iloc[:0])

    def join(self, items) -> str:
        return self.text("separator").join(self.titles[list(items)]) or self.text("none")

    def liked_disliked(self, rows: pd.DataFrame, n: int) -> tuple[list[str], list[str]]:
        """The last ``n`` liked and last ``n`` disliked items of ``rows`` (oldest first)."""
        return (
            rows.loc[rows["label"] == 1, "item_id"].tail(n).tolist(),
            rows.loc[rows["label"] == 0, "item_id"].tail(n).tolist(),
        )

    def profile_prompt(self, user: str, rows: pd.DataFrame) -> str:
        liked, disliked = self.liked_disliked(rows, positive_int(self.params, "palr.profile.history"))
        return render(
            self.text("profile"),
            f"{self.config.source}: palr.profile",
            attributes=self.attributes.get(user, self.text("none")),
            liked=self.join(liked),
            disliked=self.join(disliked),
        )


def load_lm(params: Params):
    """The configured causal LM (``palr.llm``: llm, i.e. llm.name, or a model name / folder)."""
    from assets.hidden_states import role_model
    from assets.pretrained import fingerprint
    from models.palr import CausalLM

    source = str(params.get_path("palr.llm"))
    path = role_model(params, source)
    threads = int(params.get_path("palr.num_threads"))
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    return CausalLM.load(
        path, fingerprint(path), str(params.get_path("palr.device")), str(params.get_path("palr.dtype"))
    )


def read_candidates(root: Path, dataset: str) -> pd.DataFrame:
    path = artifact_dir(root, CANDIDATES_STAGE, dataset) / "candidates.parquet"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the palr_candidates stage first")
    return read_table(path)


def without(rows: pd.DataFrame, item: str) -> pd.DataFrame:
    return rows[rows["item_id"] != item]


class Prompter:
    """Builds the token ids of listwise and pointwise prompts for one LM, cutting histories oldest-first."""

    def __init__(self, data: Data, lm):
        self.data, self.lm = data, lm
        self.limit = min(positive_int(data.params, "palr.max_length"), lm.context)
        self.where = f"{data.config.source}: palr"

    def listwise(self, user: str, profile: str, history: list[str], items: list[str]):
        """(Prompt, letter token ids) for ``items`` labelled A, B, ... in this order."""
        from models.palr import LETTERS, Prompt, fit_history
        from models.palr.prompts import labelled

        block = labelled(self.data.titles[items].tolist())
        lead = self.data.text("listwise_answer")

        def build(kept: list[str]) -> Prompt:
            text = render(self.data.text("listwise"), f"{self.where}.listwise", profile=profile,
                          history=self.data.join(kept), candidates=block)  # fmt: skip
            prefix, rest = self.lm.frame(text, "", lead)
            return Prompt(prefix, rest)

        kept, dropped = fit_history(history, lambda h: len(build(h)), self.limit)
        prompt = build(kept)
        return Prompt(prompt.prefix, prompt.rest, dropped), self.lm.single_tokens(list(LETTERS[: len(items)]))

    def pointwise(self, user: str, rows: pd.DataFrame, items: list[str]):
        """(shared prefix ids, one rest per item, history items dropped) from the user's training ``rows``."""
        from models.palr import fit_history

        recent = rows.tail(positive_int(self.data.params, "palr.pointwise_history"))
        history = list(zip(recent["item_id"], recent["label"]))
        lead = self.data.text("pointwise_answer")
        rests = [
            self.lm.frame(
                "",
                render(
                    self.data.text("pointwise_question"), f"{self.where}.pointwise_question", item=self.data.titles[i]
                ),
                lead,
            )[1]  # fmt: skip
            for i in items
        ]
        longest = max((len(r) for r in rests), default=0)

        def prefix(kept) -> list[int]:
            liked = [i for i, label in kept if label == 1]
            disliked = [i for i, label in kept if label == 0]
            text = render(
                self.data.text("pointwise_prefix"), f"{self.where}.pointwise_prefix",
                attributes=self.data.attributes.get(user, self.data.text("none")),
                liked=self.data.join(liked), disliked=self.data.join(disliked),
            )  # fmt: skip
            return self.lm.frame(text, "", "")[0]

        kept, dropped = fit_history(history, lambda h: len(prefix(h)) + longest, self.limit)
        return prefix(kept), rests, dropped

    @property
    def yes_no(self) -> list[int]:
        return self.lm.single_tokens(list(self.data.config.get_path("palr.pointwise_words")))
