"""Stage `prompts`: the LLM4MSR scenario- and user-level prompts, the item texts and the user profiles.

Everything a person may want to word differently lives in configs/prompts.yaml (params
``prompts.config``), one section per dataset; this module only fills the templates in:

- scenario: one prompt per scenario with every scenario's statistics (training split), its semantic
  description and expert knowledge, asking what the scenarios share and where they differ;
- user: the user's most recent ``prompts.recent_n`` POSITIVE interactions of the TRAINING split
  (valid/test rows are never read for histories, so nothing leaks), oldest first, grouped by
  scenario; every user of any split gets a prompt, an empty history reads as the template's ``empty``;
- item: "Title: ... Genre: ... Year: ..." from the item's content fields (LEARN, GPT4SM);
- profile: "Age: ... Gender: ... Occupation: ..." from the user's own fields (GPT4SM's query side).

The config file, the value formatting (missing values, multi-valued fields, value maps) and the
template rendering are shared with the ``text`` stage.

Outputs in artifacts/prompts/<dataset>/: scenario.parquet, user.parquet, item.parquet, profile.parquet
(an id column and ``text``), templates.json (per kind: the template id that keys the hidden-state cache
and a hash of the template section for lineage).
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any

import pandas as pd

from assets.schema import MULTI_VALUED, SEPARATOR
from assets.split import load_splits
from assets.tables import write_json, write_table
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params, read_yaml
from llm4ctr.paths import artifact_dir

STAGE = "prompts"
KINDS = ("scenario", "user", "item", "profile")
ID_COLUMNS = {"scenario": "scenario", "user": "user_id", "item": "item_id", "profile": "user_id"}
TEMPLATES_FILE = "templates.json"


# ----------------------------------------------------------------------------------------------
# The config file and how values are written (shared with the text stage)
# ----------------------------------------------------------------------------------------------


def load_config(params: Params, root: Path) -> Params:
    """The section of the prompts config for ``data.name``, as a Params whose lookups name the file."""
    path = Path(root) / params.get_path("prompts.config")
    dataset = params.get_path("data.name")
    if not path.is_file():
        raise ParamsError(f"{params.source}: prompts.config points to {path}, which does not exist")
    tree = read_yaml(path)
    if not isinstance(tree.get(dataset), dict):
        known = ", ".join(k for k, v in tree.items() if isinstance(v, dict))
        raise ParamsError(f"{path}: no section for dataset '{dataset}' (sections: {known})")
    config = Params(tree[dataset])
    config.source = f"{path} [{dataset}]"
    return config


def placeholders(template: str) -> list[str]:
    """The field names a str.format template uses, in order of appearance."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render(template: str, where: str, **values: Any) -> str:
    """``template.format(**values)``; a bad placeholder raises ParamsError naming ``where``."""
    try:
        return template.format(**values)
    except KeyError as exc:
        raise ParamsError(f"{where}: unknown placeholder {{{exc.args[0]}}}; available: {', '.join(values)}") from None
    except (ValueError, IndexError, TypeError) as exc:
        raise ParamsError(f"{where}: cannot render template {template!r}: {exc}") from None


def format_column(values: pd.Series, column: str, config: Params) -> pd.Series:
    """Column ``column`` as words (string dtype): value map applied, lists joined, empty -> <NA>."""
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    if column in MULTI_VALUED:
        text = text.str.replace(SEPARATOR, config.get_path("list_separator"), regex=False)
    mapping = (config.get_path("values") or {}).get(column)
    if mapping:
        text = text.replace({str(k): str(v) for k, v in mapping.items()})
    return text


def require_columns(frame: pd.DataFrame, columns: list[str], config: Params, key: str) -> None:
    """ParamsError when config entry ``key`` names columns the table does not have."""
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise ParamsError(
            f"{config.source}: {key} names column(s) {', '.join(unknown)} that the table does not have "
            f"(columns: {', '.join(frame.columns)})"
        )


def formatted(frame: pd.DataFrame, columns: list[str], config: Params, key: str, missing: str | None) -> pd.DataFrame:
    """The ``columns`` of ``frame`` as words; missing values become ``missing`` (or stay <NA>)."""
    require_columns(frame, columns, config, key)
    out = pd.DataFrame({c: format_column(frame[c], c, config) for c in dict.fromkeys(columns)}, index=frame.index)
    return out if missing is None else out.fillna(missing)


def template_hash(config: Params, kind: str, extra: dict[str, Any] | None = None) -> str:
    """A short hash of everything that shapes ``kind``'s texts (lineage metadata)."""
    shared = {k: config.get_path(k) for k in ("missing", "list_separator", "values")}
    blob = json.dumps(
        {"section": config.get_path(kind), "shared": shared, **(extra or {})}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# Prompt builders
# ----------------------------------------------------------------------------------------------


def scenario_stats(train: pd.DataFrame, scenarios: list[str]) -> pd.DataFrame:
    """Per scenario, from the training split: interactions, users, items, sparsity, positive rate."""
    grouped = train.groupby("scenario", observed=True)
    stats = pd.DataFrame(
        {
            "interactions": grouped.size(),
            "users": grouped["user_id"].nunique(),
            "items": grouped["item_id"].nunique(),
            "positive_rate": grouped["label"].mean(),
        }
    ).reindex(scenarios)
    stats[["interactions", "users", "items"]] = stats[["interactions", "users", "items"]].fillna(0).astype("int64")
    stats["positive_rate"] = stats["positive_rate"].fillna(0.0).astype("float64")
    cells = (stats["users"] * stats["items"]).astype("float64")
    stats["sparsity"] = (1.0 - stats["interactions"] / cells.where(cells > 0)).fillna(1.0)
    stats.index.name = "scenario"
    return stats.reset_index()


def scenario_prompts(train: pd.DataFrame, scenarios: list[str], config: Params) -> pd.DataFrame:
    """One LLM4MSR scenario-level prompt per scenario (columns: scenario, text, the statistics)."""
    where = f"{config.source}: scenario"
    descriptions = config.get_path("scenario.descriptions")
    stats = scenario_stats(train, scenarios)
    info = {}
    for row in stats.to_dict("records"):
        entry = descriptions.get(row["scenario"], descriptions.get("default"))
        if not isinstance(entry, dict) or not {"description", "knowledge"} <= set(entry):
            raise ParamsError(
                f"{where}.descriptions: no 'description' and 'knowledge' for scenario '{row['scenario']}' "
                "and no usable 'default' entry"
            )
        info[row["scenario"]] = {
            k: render(str(entry[k]), f"{where}.descriptions", **row) for k in ("description", "knowledge")
        }
    overview = config.get_path("scenario.overview")
    overviews = " ".join(
        render(overview, f"{where}.overview", **row, **info[row["scenario"]]) for row in stats.to_dict("records")
    )
    template = config.get_path("scenario.template")
    texts = [
        render(
            template, f"{where}.template", **row, **info[row["scenario"]], overviews=overviews, n_scenarios=len(stats)
        )
        for row in stats.to_dict("records")
    ]
    return stats.assign(text=texts)[["scenario", "text", "interactions", "users", "items", "sparsity", "positive_rate"]]


def user_prompts(train: pd.DataFrame, users: list[str], config: Params, recent_n: int) -> pd.DataFrame:
    """One LLM4MSR user-level prompt per user in ``users``, built from ``train`` alone.

    History: the user's positive training rows, most recent ``recent_n`` (ties in time keep the
    table's canonical order), listed oldest first, grouped by scenario (scenarios in sorted order).
    Columns: user_id, text, n_liked (positives in train), n_shown (items written into the prompt).
    """
    where = f"{config.source}: user"
    if not isinstance(recent_n, int) or isinstance(recent_n, bool) or recent_n < 1:
        raise ParamsError(f"prompts.recent_n must be a positive integer, got {recent_n!r}")
    item_template = config.get_path("user.item")
    liked = train[train["label"] == 1].sort_values("timestamp", kind="stable")
    recent = liked.groupby("user_id", sort=False).tail(recent_n)
    words = formatted(recent, placeholders(item_template), config, "user.item", config.get_path("missing"))
    shown = recent[["user_id", "scenario"]].assign(
        entry=[render(item_template, f"{where}.item", **row) for row in words.to_dict("records")]
    )
    block_template = config.get_path("user.scenario_block")
    histories: dict[str, str] = {}
    for user, rows in shown.groupby("user_id", sort=False):
        blocks = [
            render(
                block_template, f"{where}.scenario_block",
                scenario=scenario, items=config.get_path("user.item_separator").join(part["entry"]),
            )
            for scenario, part in rows.groupby("scenario", sort=True)
        ]  # fmt: skip
        histories[user] = config.get_path("user.block_separator").join(blocks)
    template, empty = config.get_path("user.template"), config.get_path("user.empty")
    texts = [render(template, f"{where}.template", history=histories.get(u, empty)) for u in users]
    n_liked = liked["user_id"].value_counts()
    n_shown = shown["user_id"].value_counts()
    return pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype="string"),
            "text": texts,
            "n_liked": [int(n_liked.get(u, 0)) for u in users],
            "n_shown": [int(n_shown.get(u, 0)) for u in users],
        }
    )


def field_texts(frame: pd.DataFrame, config: Params, kind: str, id_column: str) -> pd.DataFrame:
    """One "<name>: <value>" text per row of ``frame`` from config section ``kind`` (item: LEARN's item
    content; profile: GPT4SM's user profile); missing values are left out."""
    where = f"{config.source}: {kind}"
    fields = config.get_path(f"{kind}.fields") or {}
    part, joiner = config.get_path(f"{kind}.part"), config.get_path(f"{kind}.joiner")
    words = formatted(frame, list(fields), config, f"{kind}.fields", missing=None)
    texts = [
        joiner.join(render(part, f"{where}.part", name=fields[c], value=v) for c, v in row.items() if not pd.isna(v))
        for row in words.to_dict("records")
    ]
    return pd.DataFrame({id_column: frame[id_column].astype("string").to_numpy(), "text": texts})


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def build(splits: dict[str, pd.DataFrame], config: Params, recent_n: int) -> dict[str, pd.DataFrame]:
    """The prompt tables from the split frames (histories and statistics from train only)."""
    everything = pd.concat(list(splits.values()), ignore_index=True)
    scenarios = sorted(everything["scenario"].dropna().unique())
    users = sorted(everything["user_id"].unique())
    items = everything.drop_duplicates("item_id").sort_values("item_id").reset_index(drop=True)
    profiles = everything.drop_duplicates("user_id").sort_values("user_id").reset_index(drop=True)
    train = splits["train"]
    return {
        "scenario": scenario_prompts(train, scenarios, config),
        "user": user_prompts(train, users, config, recent_n),
        "item": field_texts(items, config, "item", "item_id"),
        "profile": field_texts(profiles, config, "profile", "user_id"),
    }


def run(params: Params, root: Path) -> dict[str, Any]:
    """Build and write the scenario, user, item and profile prompts of ``data.name``."""
    dataset = params.get_path("data.name")
    recent_n = params.get_path("prompts.recent_n")
    config = load_config(params, root)
    tables = build(load_splits(root, dataset), config, recent_n)
    templates = {
        kind: {
            "id": str(config.get_path(f"{kind}.id")),
            "hash": template_hash(config, kind, {"recent_n": recent_n} if kind == "user" else None),
        }
        for kind in KINDS
    }
    with atomic_dir(artifact_dir(root, STAGE, dataset)) as tmp:
        for kind, table in tables.items():
            write_table(table, tmp / f"{kind}.parquet")
        write_json(templates, tmp / TEMPLATES_FILE)
    users = tables["user"]
    meta: dict[str, Any] = {"dataset": dataset, "recent_n": recent_n, "templates": templates}
    for kind, table in tables.items():
        chars = table["text"].str.len()
        meta[f"{kind}_count"] = int(len(table))
        meta[f"{kind}_chars_mean"] = round(float(chars.mean()), 1) if len(table) else 0.0
        meta[f"{kind}_chars_max"] = int(chars.max()) if len(table) else 0
        meta[f"{kind}_example"] = table["text"].iloc[0] if len(table) else ""
    meta["users_without_history"] = int((users["n_shown"] == 0).sum())
    meta["history_items_mean"] = round(float(users["n_shown"].mean()), 2) if len(users) else 0.0
    return meta
