"""The stage registry: the single source of truth for the pipeline's DAG.

Each :class:`Stage` names its function, the files it reads and writes (``{dataset}`` stands for the
dataset name), and the params keys it depends on. ``dvc.yaml`` is generated from this list
(``llm4ctr dvc-yaml``) and the Dagster asset graph is built from it, so the two runners cannot drift;
a test regenerates dvc.yaml and fails when the committed file differs.

Upstream stages are derived, not declared: stage B depends on stage A when one of B's ``deps`` lies
inside one of A's ``outs`` (or contains it: a dep on a folder holding several stages' outputs).

A stage with ``foreach`` fans out over the list found at that params key (one instance per zoo
model, say): ``{item}`` in its paths stands for the item, its function is called with ``item=...``,
DVC names the instances ``stage@item`` and Dagster's assets are keyed ``stage/item``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llm4ctr.errors import ParamsError

DATASET = "{dataset}"
ITEM = "{item}"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: ``func`` and ``check`` are "module:function" strings, imported lazily."""

    name: str
    description: str
    func: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    code: tuple[str, ...] = ()  # source files/folders whose change must re-run the stage
    check: str | None = None  # data-quality check re-run on the outputs (a blocking Dagster asset check)
    metrics: tuple[str, ...] = field(default=())  # metric files (JSON), outside ``outs``, for `dvc metrics show`
    foreach: str | None = None  # params key holding the list of items this stage fans out over

    def resolve(self, attr: str = "func") -> Callable[..., Any]:
        """Import and return the callable named by ``func`` or ``check``."""
        module, _, name = getattr(self, attr).partition(":")
        return getattr(importlib.import_module(module), name)

    def paths(self, kind: str, dataset: str, item: str | None = None) -> list[str]:
        """``deps`` or ``outs`` with the dataset (and item) filled in."""
        return [p.replace(DATASET, dataset).replace(ITEM, item or ITEM) for p in getattr(self, kind)]

    def items(self, params) -> list[str | None]:
        """The instances of this stage under ``params``: its foreach list, or ``[None]``."""
        if not self.foreach:
            return [None]
        values = params.get_path(self.foreach)
        if not isinstance(values, list) or not values:
            raise ParamsError(f"{params.source}: '{self.foreach}' must be a non-empty list (stage {self.name})")
        return [str(v) for v in values]


def _overlap(dep: str, out: str) -> bool:
    """True when ``dep`` lies inside ``out`` or ``out`` inside ``dep`` (paths as strings)."""
    dep, out = dep.rstrip("/"), out.rstrip("/")
    return dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")


STAGES: tuple[Stage, ...] = (
    Stage(
        name="ingest",
        description="Parse the raw files of one dataset into the normalized interactions table, GX-validated.",
        func="assets.ingest:run",
        deps=("data/{dataset}",),
        outs=("artifacts/ingest/{dataset}",),
        params=("data.name", "data.label_rules", "data.amazon", "data.missing_references", "data.timestamp_range"),
        code=("assets/ingest.py", "assets/datasets", "assets/validation.py", "assets/schema.py"),
        check="assets.ingest:check",
    ),
    Stage(
        name="split",
        description="Split 8:1:1 into train/valid/test (random, global or per-user chronological), GX-validated.",
        func="assets.split:run",
        deps=("artifacts/ingest/{dataset}",),
        outs=("artifacts/split/{dataset}",),
        params=("data.name", "split"),
        code=("assets/split.py", "assets/validation.py"),
        check="assets.split:check",
    ),
    Stage(
        name="features",
        description="Fit the feature encoder (vocabularies with OOV, buckets) on train; encode all splits.",
        func="assets.features:run",
        deps=("artifacts/split/{dataset}",),
        outs=("artifacts/features/{dataset}",),
        params=("data.name", "features"),
        code=("assets/features.py", "models/features.py"),
    ),
    Stage(
        name="train",
        description="Train one zoo CTR model per seed (early stopping on valid AUC); predict valid/test.",
        func="assets.train:run",
        deps=("artifacts/features/{dataset}",),
        outs=("artifacts/train/{dataset}/{item}",),
        params=("data.name", "ctr", "train"),
        code=("assets/train.py", "assets/runs.py", "models/ctr", "models/layers", "models/trainer.py"),
        foreach="ctr.models",
    ),
    Stage(
        name="text",
        description="Textualize every sample (ClickPrompt): one '<field> is <value>.' sentence per field.",
        func="assets.text:run",
        deps=("artifacts/split/{dataset}", "configs/prompts.yaml"),
        outs=("artifacts/text/{dataset}",),
        params=("data.name", "prompts.config"),
        code=("assets/text.py",),
    ),
    Stage(
        name="prompts",
        description="Scenario- and user-level prompts (LLM4MSR, training split only) and item texts (LEARN).",
        func="assets.prompts:run",
        deps=("artifacts/split/{dataset}", "configs/prompts.yaml"),
        outs=("artifacts/prompts/{dataset}",),
        params=("data.name", "prompts"),
        code=("assets/prompts.py",),
    ),
    *(
        Stage(
            name=f"hidden_states_{kind}",
            description=f"Frozen-LLM hidden states of the {kind} prompts (cached by content hash, resumable).",
            func=f"assets.hidden_states:run_{kind}",
            deps=("artifacts/prompts/{dataset}",),
            outs=(f"artifacts/hidden_states_{kind}/{{dataset}}",),
            params=("data.name", "llm", "plm", "hidden_states"),
            code=("assets/hidden_states.py", "models/hidden_states.py", "assets/pretrained.py"),
        )
        for kind in ("scenario", "user", "item")
    ),
    Stage(
        name="evaluate",
        description="Score every method's test predictions: AUC, LogLoss, RelaImpr, per scenario, long-tail segments.",
        func="assets.evaluate:run",
        deps=("artifacts/split/{dataset}", "artifacts/train/{dataset}", "artifacts/clickprompt/{dataset}",
              "artifacts/msr/{dataset}", "artifacts/llm4msr/{dataset}", "artifacts/learn/{dataset}"),
        outs=("artifacts/evaluate/{dataset}",),
        params=("data.name", "evaluate"),
        code=("assets/evaluate.py", "models/metrics.py"),
        metrics=("artifacts/evaluate/metrics.json",),
    ),
    Stage(
        name="bento",
        description="Register the served CTR-only checkpoint + its encoder in the BentoML store (metrics, lineage).",
        func="assets.bento:run",
        deps=("artifacts/split/{dataset}", "artifacts/features/{dataset}", "artifacts/train/{dataset}"),
        outs=("artifacts/bento/{dataset}",),
        params=("data.name", "serve"),
        code=("assets/bento.py",),
    ),
    Stage(
        name="drift",
        description="Evidently drift of served (else test) traffic vs train, overall and per long-tail segment.",
        func="assets.drift:run",
        deps=("artifacts/split/{dataset}", "artifacts/bento/{dataset}"),
        outs=("artifacts/drift/{dataset}",),
        params=("data.name", "serve.log_dir", "drift"),
        code=("assets/drift.py", "models/predictor.py", "assets/prediction_log.py", "models/metrics.py"),
    ),
    Stage(
        name="clickprompt_pretrain",
        description="ClickPrompt PA-MLM: CTR model, prompt generator and PLM trained jointly on the training texts.",
        func="assets.clickprompt:pretrain",
        deps=("artifacts/split/{dataset}", "artifacts/features/{dataset}", "configs/prompts.yaml"),
        outs=("artifacts/clickprompt_pretrain/{dataset}/{item}",),
        params=("data.name", "ctr", "plm.name", "clickprompt.ctr_model", "clickprompt.num_prompts",
                "clickprompt.max_length", "clickprompt.subsample_seed", "clickprompt.pretrain"),
        code=("assets/clickprompt.py", "assets/text.py", "assets/prompts.py", "assets/pretrained.py",
              "models/clickprompt", "models/ctr", "models/layers"),
        foreach="clickprompt.pretrain.variants",
    ),
    Stage(
        name="clickprompt",
        description="ClickPrompt finetuning (w/o PLM, with PLM, ablations) from the PA-MLM checkpoints; predict valid/test.",
        func="assets.clickprompt:finetune",
        deps=("artifacts/split/{dataset}", "artifacts/features/{dataset}", "configs/prompts.yaml",
              "artifacts/clickprompt_pretrain/{dataset}"),
        outs=("artifacts/clickprompt/{dataset}/{item}",),
        params=("data.name", "ctr", "train", "clickprompt"),
        code=("assets/clickprompt.py", "assets/runs.py", "assets/text.py", "assets/prompts.py", "models/clickprompt",
              "models/ctr", "models/layers", "models/trainer.py"),
        foreach="clickprompt.finetune.variants",
    ),
    Stage(
        name="learn_tower",
        description="LEARN twin tower (or the ID baseline) per seed: InfoNCE on training sequences; Recall/NDCG@10.",
        func="assets.learn:run_tower",
        deps=("artifacts/split/{dataset}", "artifacts/hidden_states_item/{dataset}"),
        outs=("artifacts/learn_tower/{dataset}/{item}",),
        params=("data.name", "train.seeds", "evaluate.longtail_share", "learn.sequence", "learn.center_content",
                "learn.tower", "learn.tower_train"),
        code=("assets/learn.py", "models/learn"),
        metrics=("artifacts/learn_tower/{dataset}/retrieval-{item}.json",),
        foreach="learn.towers",
    ),
    Stage(
        name="learn_embed",
        description="Export a LEARN tower's item embeddings and every split row's causal user embedding, per seed.",
        func="assets.learn:run_embed",
        deps=("artifacts/split/{dataset}", "artifacts/learn_tower/{dataset}/{item}"),
        outs=("artifacts/learn_embed/{dataset}/{item}",),
        params=("data.name", "train.seeds", "learn.sequence", "learn.tower_train.history_len"),
        code=("assets/learn.py", "models/learn"),
        foreach="learn.towers",
    ),
    Stage(
        name="learn",
        description="A zoo CTR model + LEARN features (aux CTR task's middle vector, user/item embeddings); predict.",
        func="assets.learn:run_ranker",
        deps=("artifacts/split/{dataset}", "artifacts/features/{dataset}", "artifacts/learn_embed/{dataset}"),
        outs=("artifacts/learn/{dataset}/{item}",),
        params=("data.name", "ctr", "train", "learn.ranker"),
        code=("assets/learn.py", "assets/runs.py", "models/learn", "models/ctr", "models/layers", "models/trainer.py"),
        foreach="learn.ranker.variants",
    ),
    Stage(
        name="msr",
        description="A multi-scenario backbone, plain or with the DN / EP enhancement, per seed; predict valid/test.",
        func="assets.llm4msr:run_baseline",
        deps=("artifacts/features/{dataset}",),
        outs=("artifacts/msr/{dataset}/{item}",),
        params=("data.name", "llm4msr"),
        code=("assets/llm4msr.py", "assets/runs.py", "models/msr", "models/layers", "models/trainer.py"),
        foreach="llm4msr.baselines",
    ),
    Stage(
        name="llm4msr",
        description="LLM4MSR: a backbone under meta layers generated from cached LLM user/scenario states, per seed.",
        func="assets.llm4msr:run",
        deps=("artifacts/features/{dataset}", "artifacts/prompts/{dataset}", "artifacts/hidden_states_user/{dataset}",
              "artifacts/hidden_states_scenario/{dataset}"),
        outs=("artifacts/llm4msr/{dataset}/{item}",),
        params=("data.name", "llm4msr"),
        code=("assets/llm4msr.py", "assets/runs.py", "models/msr", "models/layers", "models/trainer.py"),
        foreach="llm4msr.enhanced",
    ),
)


def get_stage(name: str) -> Stage:
    """The stage called ``name``; raises KeyError listing the known names."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage '{name}'; known stages: {', '.join(s.name for s in STAGES)}")


def upstream(stage: Stage) -> list[str]:
    """Names of the stages whose outputs ``stage`` reads."""
    return [
        other.name
        for other in STAGES
        if other is not stage and any(_overlap(d, o) for d in stage.deps for o in other.outs)
    ]


def instance_edges(params, dataset: str = "ds") -> dict[tuple[str, str | None], list[tuple[str, str | None]]]:
    """(stage, item) -> the (stage, item) instances it reads from, with every path filled in."""
    instances = [(s, item) for s in STAGES for item in s.items(params)]
    edges = {}
    for stage, item in instances:
        deps = stage.paths("deps", dataset, item)
        edges[(stage.name, item)] = [
            (other.name, other_item)
            for other, other_item in instances
            if other is not stage
            and any(_overlap(d, o) for d in deps for o in other.paths("outs", dataset, other_item))
        ]
    return edges
