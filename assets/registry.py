"""The stage registry: the single source of truth for the pipeline's DAG.

Each :class:`Stage` names its function, the files it reads and writes (``{dataset}`` stands for the
dataset name, ``${dotted.key}`` for a params value, as in dvc.yaml), and the params keys it depends
on. Everything else is derived, so nothing can be forgotten:

- ``code``: the project source files the stage runs, from the import closure of its module
  (assets/imports.py); DVC re-runs the stage when one changes;
- upstream stages: stage B depends on stage A when one of B's ``deps`` lies inside one of A's
  ``outs`` (or contains it: a dep on a folder holding several stages' outputs);
- evaluate's inputs: the outputs of every stage marked ``scored``;
- the resume key of a stage's work dirs (assets/runs.py): its declared params minus
  :data:`llm4ctr.settings.RUNTIME_KEYS`, plus the content of its declared inputs.

``dvc.yaml`` is generated from this list (``llm4ctr dvc-yaml``) and the Dagster asset graph is built
from it, so the two runners cannot drift; a test regenerates dvc.yaml and fails when the committed
file differs. ``STAGES`` is in topological order (a test checks it).

A ``distributed`` stage may run in several processes (``llm4ctr stage X --nproc N`` or the ``launch``
params, from `dvc repro` and Dagster alike): its loops split the work over the ranks through
models.distributed and only rank 0 publishes its outputs (llm4ctr.atomic.atomic_dir).

A stage with ``fan_out`` runs once per variant listed at that params key (one instance per zoo model,
say): ``{variant}`` in its paths stands for the variant, its function is called with ``variant=...``,
DVC names the instances ``stage@variant`` and Dagster's assets are keyed ``stage/variant``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from llm4ctr.errors import ParamsError

DATASET = "{dataset}"
VARIANT = "{variant}"
PARAM_REF = re.compile(r"\$\{([a-z_.]+)\}")  # ${serve.stage}: a params value inside a path


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: ``func`` and ``check`` are "module:function" strings, imported lazily."""

    name: str
    description: str
    func: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    check: str | None = None  # data-quality check re-run on the outputs (a blocking Dagster asset check)
    metrics: tuple[str, ...] = field(default=())  # metric files (JSON), outside ``outs``, cached, for `dvc metrics`
    fan_out: str | None = None  # params key holding the list of variants this stage runs once each
    scored: bool = False  # writes <variant>/predictions.parquet: evaluate scores every variant
    resumable: bool = False  # keeps resumable work dirs under artifacts/.work/<stage>/ (assets/runs.py)
    distributed: bool = False  # runs under torchrun (`llm4ctr stage --nproc N`): its loops shard, rank 0 writes
    curves: bool = False  # writes training curves per seed (assets/curves.py): `dvc plots` and metrics outputs

    def resolve(self, attr: str = "func") -> Callable[..., Any]:
        """Import and return the callable named by ``func`` or ``check``."""
        module, _, name = getattr(self, attr).partition(":")
        return getattr(importlib.import_module(module), name)

    @cached_property
    def code(self) -> tuple[str, ...]:
        """The project files the stage runs: the import closure of its function's (and check's) module."""
        from assets.imports import closure

        modules = [ref.partition(":")[0] for ref in (self.func, self.check) if ref]
        return tuple(closure(modules))

    def paths(self, kind: str, dataset: str, variant: str | None = None, params=None) -> list[str]:
        """``deps`` or ``outs`` with the dataset, the variant and (given ``params``) params values filled in."""
        filled = [p.replace(DATASET, dataset).replace(VARIANT, variant or VARIANT) for p in getattr(self, kind)]
        if params is None:
            return filled
        return [PARAM_REF.sub(lambda m: str(params.get_path(m.group(1))), p) for p in filled]

    def variants(self, params) -> list[str | None]:
        """The instances of this stage under ``params``: its fan-out list, or ``[None]``."""
        if not self.fan_out:
            return [None]
        values = params.get_path(self.fan_out)
        if not isinstance(values, list) or not values:
            raise ParamsError(f"{params.source}: '{self.fan_out}' must be a non-empty list (stage {self.name})")
        return [str(v) for v in values]


def _overlap(dep: str, out: str) -> bool:
    """True when ``dep`` lies inside ``out`` or ``out`` inside ``dep`` (paths as strings)."""
    dep, out = dep.rstrip("/"), out.rstrip("/")
    return dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")


_PRODUCERS: tuple[Stage, ...] = (
    Stage(
        name="ingest",
        description="Parse the raw files of one dataset into the normalized interactions table, GX-validated.",
        func="assets.ingest:run",
        deps=("data/{dataset}",),
        outs=("artifacts/ingest/{dataset}",),
        params=("data.name", "data.label_rules", "data.amazon", "data.missing_references", "data.timestamp_range"),
        check="assets.ingest:check",
    ),
    Stage(
        name="split",
        description="Split 8:1:1 into train/valid/test (random, global or per-user chronological), GX-validated.",
        func="assets.split:run",
        deps=("artifacts/ingest/{dataset}",),
        outs=("artifacts/split/{dataset}",),
        params=("data.name", "split"),
        check="assets.split:check",
    ),
    Stage(
        name="features",
        description="Fit the feature encoder (vocabularies with OOV, buckets) on train; encode all splits.",
        func="assets.features:run",
        deps=("artifacts/split/{dataset}",),
        outs=("artifacts/features/{dataset}",),
        params=("data.name", "features"),
    ),
    Stage(
        name="text",
        description="Textualize every sample (ClickPrompt): one '<field> is <value>.' sentence per field.",
        func="assets.text:run",
        deps=("artifacts/split/{dataset}", "configs/prompts.yaml"),
        outs=("artifacts/text/{dataset}",),
        params=("data.name", "prompts.config"),
    ),
    Stage(
        name="prompts",
        description="Scenario- and user-level prompts (LLM4MSR, training split only) and item texts (LEARN).",
        func="assets.prompts:run",
        deps=("artifacts/split/{dataset}", "configs/prompts.yaml"),
        outs=("artifacts/prompts/{dataset}",),
        params=("data.name", "prompts"),
    ),
    *(
        Stage(
            name=f"hidden_states_{kind}",
            description=f"Frozen-LLM hidden states of the {kind} prompts (cached by content hash, resumable).",
            func=f"assets.hidden_states:run_{kind}",
            deps=("artifacts/prompts/{dataset}",),
            outs=(f"artifacts/hidden_states_{kind}/{{dataset}}",),
            params=("data.name", "llm", "plm", "hidden_states"),
            distributed=True,
        )
        for kind in ("scenario", "user", "item")
    ),
    Stage(
        name="hidden_states_teacher",
        description="GPT4SM's teacher: frozen-model embeddings of the item texts and user profiles (cached).",
        func="assets.hidden_states:run_teacher",
        deps=("artifacts/prompts/{dataset}",),
        outs=("artifacts/hidden_states_teacher/{dataset}",),
        params=("data.name", "llm", "plm", "hidden_states"),
        distributed=True,
    ),
    Stage(
        name="train",
        description="Train one zoo CTR model per seed (early stopping on valid AUC); predict valid/test.",
        func="assets.train:run",
        deps=("artifacts/features/{dataset}",),
        outs=("artifacts/train/{dataset}/{variant}",),
        params=("data.name", "ctr", "train"),
        fan_out="ctr.models",
        scored=True,
        resumable=True,
        distributed=True,
        curves=True,
    ),
    Stage(
        name="clickprompt_pretrain",
        description="ClickPrompt PA-MLM: CTR model, prompt generator and PLM trained jointly on the training texts.",
        func="assets.clickprompt:pretrain",
        deps=("artifacts/features/{dataset}", "artifacts/text/{dataset}"),
        outs=("artifacts/clickprompt_pretrain/{dataset}/{variant}",),
        params=(
            "data.name",
            "ctr",
            "plm.name",
            "clickprompt.ctr_model",
            "clickprompt.num_prompts",
            "clickprompt.max_length",
            "clickprompt.subsample_seed",
            "clickprompt.pretrain",
        ),
        fan_out="clickprompt.pretrain.variants",
        resumable=True,
        distributed=True,
        curves=True,
    ),
    Stage(
        name="clickprompt",
        description="ClickPrompt finetuning (w/o PLM, with PLM, ablations) from the PA-MLM checkpoints; "
        "predict valid/test.",
        func="assets.clickprompt:finetune",
        deps=("artifacts/features/{dataset}", "artifacts/text/{dataset}", "artifacts/clickprompt_pretrain/{dataset}"),
        outs=("artifacts/clickprompt/{dataset}/{variant}",),
        params=("data.name", "ctr", "train", "plm.name", "clickprompt"),
        fan_out="clickprompt.finetune.variants",
        scored=True,
        resumable=True,
        distributed=True,
        curves=True,
    ),
    Stage(
        name="msr",
        description="A multi-scenario backbone, plain or with the DN / EP enhancement, per seed; predict valid/test.",
        func="assets.llm4msr:run_baseline",
        deps=("artifacts/features/{dataset}",),
        outs=("artifacts/msr/{dataset}/{variant}",),
        params=("data.name", "train", "llm4msr"),
        fan_out="llm4msr.baselines",
        scored=True,
        resumable=True,
        distributed=True,
        curves=True,
    ),
    Stage(
        name="llm4msr",
        description="LLM4MSR: a backbone under meta layers generated from cached LLM user/scenario states, per seed.",
        func="assets.llm4msr:run",
        deps=(
            "artifacts/features/{dataset}",
            "artifacts/prompts/{dataset}",
            "artifacts/hidden_states_user/{dataset}",
            "artifacts/hidden_states_scenario/{dataset}",
        ),
        outs=("artifacts/llm4msr/{dataset}/{variant}",),
        params=("data.name", "train", "llm4msr"),
        fan_out="llm4msr.enhanced",
        scored=True,
        resumable=True,
        distributed=True,
        curves=True,
    ),
    Stage(
        name="gpt4sm_pretrain",
        description="GPT4SM EaaP's first phase per seed: the student copies the teacher's text embeddings, no labels.",
        func="assets.gpt4sm:pretrain",
        deps=("artifacts/prompts/{dataset}", "artifacts/hidden_states_teacher/{dataset}"),
        outs=("artifacts/gpt4sm_pretrain/{dataset}",),
        params=(
            "data.name",
            "train.seeds",
            "plm.name",
            "llm.name",
            "gpt4sm.student",
            "gpt4sm.trainable_layers",
            "gpt4sm.max_length",
            "gpt4sm.center_teacher",
            "gpt4sm.copy_hidden",
            "gpt4sm.pretrain",
        ),
    ),
    Stage(
        name="gpt4sm",
        description="GPT4SM: a student PLM with the teacher's embeddings as feature / regulariser / pre-training "
        "(or a zoo model with them as a dense feature), per seed; predict valid/test.",
        func="assets.gpt4sm:run",
        deps=(
            "artifacts/split/{dataset}",
            "artifacts/features/{dataset}",
            "artifacts/prompts/{dataset}",
            "artifacts/hidden_states_teacher/{dataset}",
            "artifacts/gpt4sm_pretrain/{dataset}",
        ),
        outs=("artifacts/gpt4sm/{dataset}/{variant}",),
        params=("data.name", "ctr", "train", "plm.name", "llm.name", "gpt4sm"),
        fan_out="gpt4sm.variants",
        scored=True,
        resumable=True,
        distributed=True,
        curves=True,
    ),
    Stage(
        name="learn_tower",
        description="LEARN twin tower (or the ID baseline) per seed: InfoNCE on training sequences; Recall/NDCG@10.",
        func="assets.learn:run_tower",
        deps=("artifacts/split/{dataset}", "artifacts/hidden_states_item/{dataset}"),
        outs=("artifacts/learn_tower/{dataset}/{variant}",),
        params=(
            "data.name",
            "train.seeds",
            "evaluate.longtail_share",
            "learn.sequence",
            "learn.center_content",
            "learn.tower",
            "learn.tower_train",
        ),
        metrics=("artifacts/learn_tower/{dataset}/retrieval-{variant}.json",),
        fan_out="learn.towers",
        resumable=True,
        distributed=True,
        curves=True,
    ),
    Stage(
        name="learn_embed",
        description="Export a LEARN tower's item embeddings and every split row's causal user embedding, per seed.",
        func="assets.learn:run_embed",
        deps=("artifacts/split/{dataset}", "artifacts/learn_tower/{dataset}/{variant}"),
        outs=("artifacts/learn_embed/{dataset}/{variant}",),
        params=("data.name", "train.seeds", "learn.sequence", "learn.tower_train.history_len"),
        fan_out="learn.towers",
    ),
    Stage(
        name="learn",
        description="A zoo CTR model + LEARN features (aux CTR task's middle vector, user/item embeddings); predict.",
        func="assets.learn:run_ranker",
        deps=("artifacts/split/{dataset}", "artifacts/features/{dataset}", "artifacts/learn_embed/{dataset}"),
        outs=("artifacts/learn/{dataset}/{variant}",),
        params=("data.name", "ctr", "train", "learn.ranker"),
        fan_out="learn.ranker.variants",
        scored=True,
        resumable=True,
        distributed=True,
        curves=True,
    ),
)

_PRODUCERS += (
    Stage(
        name="palr_candidates",
        description="PALR's candidate lists per evaluation user: LLMRank (target + random unseen) and LlamaRec "
        "(the retriever's top-K).",
        func="assets.palr_lists:candidates",
        deps=("artifacts/split/{dataset}", "artifacts/learn_tower/{dataset}"),
        outs=("artifacts/palr_candidates/{dataset}",),
        params=(
            "data.name",
            "train.seeds",
            "learn.sequence",
            "learn.tower",
            "learn.tower_train.history_len",
            "palr.users",
            "palr.user_seed",
            "palr.candidates",
            "palr.retriever",
        ),
    ),
    Stage(
        name="palr_profiles",
        description="PALR's LLM-written user profiles from the training split (cached by content, resumable).",
        func="assets.palr_lists:profiles",
        deps=(
            "artifacts/split/{dataset}",
            "artifacts/prompts/{dataset}",
            "artifacts/palr_candidates/{dataset}",
            "configs/prompts.yaml",
        ),
        outs=("artifacts/palr_profiles/{dataset}",),
        params=(
            "data.name",
            "prompts.config",
            "llm.name",
            "palr.llm",
            "palr.user_seed",
            "palr.profile",
            "palr.finetune.pool",
            "palr.device",
            "palr.dtype",
        ),
        distributed=True,
    ),
    Stage(
        name="palr",
        description="The LLM as the ranker (listwise, pointwise; zero-shot or LoRA) and the baselines on the same "
        "lists; pointwise predicts the evaluation users' test rows.",
        func="assets.palr:run",
        deps=(
            "artifacts/split/{dataset}",
            "artifacts/features/{dataset}",
            "artifacts/prompts/{dataset}",
            "artifacts/train/{dataset}/${evaluate.base_model}",  # a zoo variant other than the base: train@<it> first
            "artifacts/palr_candidates/{dataset}",
            "artifacts/palr_profiles/{dataset}",
            "configs/prompts.yaml",
        ),
        outs=("artifacts/palr/{dataset}/{variant}",),
        params=("data.name", "prompts.config", "ctr.models", "train.seeds", "evaluate.base_model", "llm.name", "palr"),
        fan_out="palr.variants",
        scored=True,
        resumable=True,
        distributed=True,
    ),
)

SCORED: tuple[str, ...] = tuple(s.name for s in _PRODUCERS if s.scored)

STAGES: tuple[Stage, ...] = (
    *_PRODUCERS,
    Stage(
        name="evaluate",
        description="Score every method's test predictions: AUC, LogLoss, RelaImpr, per scenario, long-tail segments.",
        func="assets.evaluate:run",
        deps=("artifacts/split/{dataset}", *(f"artifacts/{name}/{{dataset}}" for name in SCORED)),
        outs=("artifacts/evaluate/{dataset}",),
        params=("data.name", "evaluate"),
    ),
    Stage(
        name="bento",
        description="Register the served CTR-only checkpoint + encoder in the BentoML store, with its model card.",
        func="assets.bento:run",
        deps=(
            "artifacts/split/{dataset}",
            "artifacts/features/{dataset}",
            "artifacts/${serve.stage}/{dataset}/${serve.variant}",
        ),
        outs=("artifacts/bento/{dataset}",),
        # which checkpoint and what its model card says; the rest of `serve` is read when the service starts
        params=(
            "data.name",
            "data.label_rules",
            "serve.stage",
            "serve.variant",
            "serve.seed",
            "serve.model_name",
            "evaluate.longtail_share",
        ),
    ),
    Stage(
        name="drift",
        description="Evidently drift of served (else test) traffic vs train, overall and per long-tail segment.",
        func="assets.drift:run",
        deps=("artifacts/split/{dataset}", "artifacts/bento/{dataset}"),
        outs=("artifacts/drift/{dataset}",),
        params=("data.name", "serve.log_dir", "evaluate.longtail_share", "drift"),
    ),
)


def get_stage(name: str) -> Stage:
    """The stage called ``name``; raises KeyError listing the known names."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage '{name}'; known stages: {', '.join(s.name for s in STAGES)}")


def upstream(stage: Stage, params) -> list[str]:
    """Names of the stages whose outputs ``stage`` reads under ``params``."""
    deps = stage.paths("deps", DATASET, VARIANT, params)
    return [
        other.name
        for other in STAGES
        if other is not stage
        and any(_overlap(d, o) for d in deps for o in other.paths("outs", DATASET, VARIANT, params))
    ]


def instance_edges(params, dataset: str = "ds") -> dict[tuple[str, str | None], list[tuple[str, str | None]]]:
    """(stage, variant) -> the (stage, variant) instances it reads from, with every path filled in."""
    instances = [(s, variant) for s in STAGES for variant in s.variants(params)]
    edges = {}
    for stage, variant in instances:
        deps = stage.paths("deps", dataset, variant, params)
        edges[(stage.name, variant)] = [
            (other.name, other_variant)
            for other, other_variant in instances
            if other is not stage
            and any(_overlap(d, o) for d in deps for o in other.paths("outs", dataset, other_variant, params))
        ]
    return edges
