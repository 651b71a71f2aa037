"""The registry tells the truth about every stage it can run here: the params it declares are all it
reads, the inputs it declares are all it needs, and its code dependencies are its real imports.

The stages run in process on a generated ML-100K (RecBole atomic files): the pipeline up to the zoo
model, a multi-scenario baseline, evaluate and bento. Each stage runs twice: once in the full
project root with params that record every key read, once in a root holding only its declared
inputs, where it must succeed all the same. The LLM stages need real weights (slow tests).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from assets.imports import closure
from assets.registry import STAGES, get_stage
from llm4ctr.params import Params, load_params
from orchestration import dvc_yaml
from tests.fixtures_serving import bentoml_home

ROOT = Path(__file__).resolve().parents[1]
CHEAP = [
    ("ingest", None),
    ("split", None),
    ("features", None),
    ("text", None),
    ("prompts", None),
    ("train", "dcnv2"),
    ("msr", "star"),
    ("evaluate", None),
    ("bento", None),
]


class RecordingParams(Params):
    """Params that remember every dotted key looked up."""

    def get_path(self, key, default=...):
        self.read.add(key)
        return super().get_path(key, default)


def recording(params: Params) -> RecordingParams:
    out = RecordingParams(params)
    out.source, out.read = params.source, set()
    return out


def write_raw(folder: Path, n_users: int = 60, n_items: int = 80, n_rows: int = 3000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    pairs = rng.choice(n_users * n_items, n_rows, replace=False)
    rows = [
        f"{p // n_items + 1}\t{p % n_items + 1}\t{rng.integers(1, 6)}\t{880000000 + 60 * k}"
        for k, p in enumerate(pairs)
    ]
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(rows) + "\n"
    )
    users = [
        f"{u}\t{rng.integers(15, 70)}\t{'MF'[u % 2]}\t{['writer', 'student', 'other'][u % 3]}\t{10000 + u}"
        for u in range(1, n_users + 1)
    ]
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + "\n".join(users) + "\n"
    )
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance"]
    items = [f"{i}\tMovie {i}\t{1950 + i % 50}\t{genres[i % 5]} {genres[(i * 3) % 5]}" for i in range(1, n_items + 1)]
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "\n".join(items) + "\n"
    )


def small_params() -> Params:
    return load_params(
        ROOT / "params.yaml",
        {
            "ctr.models": ["dcnv2"],
            "train.seeds": [1],
            "train.max_epochs": 1,
            "train.progress": False,
            "llm4msr.baselines": ["star"],
            "data.source": "local",
        },
    )


def run_stage(params: Params, root: Path, name: str, variant: str | None):
    stage = get_stage(name)
    return stage.resolve()(params, root, **({"variant": variant} if variant else {}))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, set[str]]]:
    """A project root after the cheap stages, and the params keys each stage read."""
    root = tmp_path_factory.mktemp("full")
    shutil.copytree(ROOT / "configs", root / "configs")
    write_raw(root / "data" / "ml-100k")
    read = {}
    with bentoml_home(root / "bentoml_home"):
        for name, variant in CHEAP:
            params = recording(small_params())
            run_stage(params, root, name, variant)
            read[name] = params.read
    return root, read


def _declared(key: str, declared: tuple[str, ...]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


@pytest.mark.parametrize("name", [n for n, _ in CHEAP])
def test_a_stage_reads_only_the_params_it_declares(project, name):
    _, read = project
    undeclared = sorted(k for k in read[name] if not _declared(k, get_stage(name).params))
    assert not undeclared, f"stage {name} reads params it does not declare (DVC would not re-run it): {undeclared}"


@pytest.mark.parametrize(("name", "variant"), CHEAP)
def test_a_stage_runs_from_its_declared_inputs_alone(project, tmp_path, name, variant):
    root, _ = project
    params = small_params()
    for dep in get_stage(name).paths("deps", "ml-100k", variant, params):
        source = root / dep
        if not source.exists():  # evaluate's inputs from the LLM stages, which do not run here
            continue
        (tmp_path / dep).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, tmp_path / dep)
    with bentoml_home(tmp_path / "bentoml_home"):
        run_stage(params, tmp_path, name, variant)
    for out in get_stage(name).paths("outs", "ml-100k", variant, params):
        assert (tmp_path / out).exists()


def test_code_dependencies_are_the_import_closure():
    train = get_stage("train")
    assert "models/metrics.py" in train.code and "models/checkpoint.py" in train.code
    assert "models/trainer.py" in train.code and "assets/runs.py" in train.code
    assert "models/ctr" in train.code  # every zoo model file: listed as the folder
    assert "assets/pretrained.py" in get_stage("clickprompt").code
    assert {"models/trainer.py", "assets/runs.py"} <= set(get_stage("learn_tower").code)
    for stage in STAGES:
        assert not any(path.startswith("serving") for path in stage.code), stage.name
        generated = dvc_yaml.stage_entry(stage)
        deps = (generated.get("do") or generated)["deps"]
        assert all(path in deps for path in stage.code), stage.name


def test_the_closure_follows_imports_inside_functions(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "assets" / "__init__.py").write_text("")
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "assets" / "stage.py").write_text("import json\n\ndef run():\n    from models.net import Net\n")
    (tmp_path / "models" / "net.py").write_text("from models import layers\n")
    (tmp_path / "models" / "layers.py").write_text("X = 1\n")
    (tmp_path / "models" / "unused.py").write_text("Y = 2\n")
    assert closure(["assets.stage"], tmp_path) == [
        "assets/__init__.py",
        "assets/stage.py",
        "models/__init__.py",
        "models/layers.py",
        "models/net.py",
    ]


def test_stages_are_listed_in_topological_order():
    from assets.registry import upstream

    params = load_params(ROOT / "params.yaml")
    position = {s.name: i for i, s in enumerate(STAGES)}
    for stage in STAGES:
        assert all(position[up] < position[stage.name] for up in upstream(stage, params)), stage.name


def test_evaluate_reads_every_scored_stage_and_bento_the_served_one():
    params = load_params(ROOT / "params.yaml", {"serve.stage": "clickprompt", "serve.variant": "clickprompt_wo_plm"})
    evaluate = get_stage("evaluate").paths("deps", "ml-100k")
    assert {f"artifacts/{s.name}/ml-100k" for s in STAGES if s.scored} <= set(evaluate)
    assert "artifacts/clickprompt/ml-100k/clickprompt_wo_plm" in get_stage("bento").paths(
        "deps", "ml-100k", None, params
    )


@pytest.mark.parametrize(
    "config",
    [
        "models.trainer:TrainConfig",
        "models.learn.train_tower:TowerConfig",
        "models.clickprompt.pretrain:PretrainConfig",
    ],
)
def test_settings_defaults_are_the_params_yaml_values(config):
    """A settings class built without an argument must not silently differ from params.yaml."""
    import dataclasses
    import importlib

    module, _, name = config.partition(":")
    cls = getattr(importlib.import_module(module), name)
    section = load_params(ROOT / "params.yaml").get_path(cls.SECTION)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    differ = {k: (defaults[k], v) for k, v in section.items() if k in defaults and defaults[k] != v}
    assert not differ, f"{cls.SECTION}: in-code default vs params.yaml: {differ}"
