"""assets.runs.resume_key: the one key of every resumable stage's work dirs.

Runtime settings (seed lists, progress, threads, device, checkpoint cadence, fan-out lists) must
resume finished work; a real hyper-parameter or a changed input must start afresh.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assets.registry import STAGES
from assets.runs import resume_key
from llm4ctr.params import load_params

ROOT = Path(__file__).resolve().parents[1]
RESUMABLE = [s for s in STAGES if s.resumable]
RUNTIME_TOGGLES = {  # dotted key -> another value; none of them changes what one run learns
    "train.seeds": [1, 2, 3],
    "train.progress": False,
    "train.num_threads": 2,
    "train.device": "cpu",
    "llm4msr.train.progress": True,
    "clickprompt.pretrain.progress": False,
    "clickprompt.pretrain.checkpoint_every": 7,
    "clickprompt.pretrain.stop_at": 3,
    "clickprompt.finetune.plm_seeds": [5, 6],
    "learn.tower_train.progress": False,
    "learn.tower_train.num_threads": 1,
    "ctr.models": ["fm"],
    "llm4msr.baselines": ["star"],
    "palr.variants": ["pointwise_lora8"],
    "palr.progress": False,
}
REAL_CHANGE = {  # stage -> a hyper-parameter it declares
    "train": {"train.lr": 0.5},
    "msr": {"llm4msr.embedding_dim": 8},
    "llm4msr": {"llm4msr.train.patience": 9},
    "clickprompt_pretrain": {"clickprompt.pretrain.mask_probability": 0.3},
    "clickprompt": {"clickprompt.finetune.alpha": 0.9},
    "learn_tower": {"learn.tower_train.lr": 0.5},
    "learn": {"learn.ranker.aux_weight": 0.5},
    "gpt4sm": {"gpt4sm.reg_weight": 0.5},
    "palr": {"palr.finetune.lora.lr": 0.5},
}


def _key(stage, root: Path, overrides: dict | None = None) -> str:
    params = load_params(ROOT / "params.yaml", overrides or {})
    return resume_key(params, root, stage.name, stage.variants(params)[0])


def test_every_resumable_stage_has_a_real_change_to_test():
    assert sorted(REAL_CHANGE) == sorted(s.name for s in RESUMABLE)


@pytest.mark.parametrize("stage", RESUMABLE, ids=lambda s: s.name)
def test_runtime_settings_resume(stage, tmp_path):
    base = _key(stage, tmp_path)
    for key, value in RUNTIME_TOGGLES.items():
        assert _key(stage, tmp_path, {key: value}) == base, f"{stage.name}: toggling {key} restarts the run"


@pytest.mark.parametrize("stage", RESUMABLE, ids=lambda s: s.name)
def test_a_real_hyper_parameter_or_a_changed_input_restarts(stage, tmp_path):
    base = _key(stage, tmp_path)
    assert _key(stage, tmp_path, REAL_CHANGE[stage.name]) != base
    params = load_params(ROOT / "params.yaml")
    first_input = tmp_path / stage.paths("deps", "ml-100k", stage.variants(params)[0], params)[0]
    first_input.mkdir(parents=True, exist_ok=True)
    (first_input / "part.parquet").write_bytes(b"an upstream output")
    changed = _key(stage, tmp_path)
    assert changed != base
    (first_input / ".tmp-part.parquet-abc").write_bytes(b"a writer's temporary")
    assert _key(stage, tmp_path) == changed  # a writer's temporaries are not content
