"""assets.runs.seed_digest: what keys a seed's resumable work dir."""

from __future__ import annotations

from assets.runs import seed_digest
from llm4ctr.params import Params
from tests.fixtures_params import project_params


def _params(**train) -> Params:
    """params.yaml with a few train settings and the ClickPrompt finetune section pinned; ``train`` overrides."""
    return project_params({"train.lr": 1e-3, "train.seeds": [1], "train.progress": True, "train.num_threads": 0,
                           **{f"train.{key}": value for key, value in train.items()},
                           "clickprompt.finetune.plm_seeds": [1], "clickprompt.finetune.rows": 10,
                           "clickprompt.finetune.train.max_epochs": 1})


def test_seed_lists_and_runtime_switches_do_not_change_the_digest():
    keys = ("data.name", "train", "clickprompt.finetune")
    base = seed_digest(_params(), keys)
    assert seed_digest(_params(seeds=[1, 2, 3], progress=False, num_threads=2), keys) == base
    changed = _params()
    changed["clickprompt"]["finetune"]["plm_seeds"] = [1, 2]
    assert seed_digest(changed, keys) == base


def test_what_a_seed_learns_changes_the_digest():
    keys = ("data.name", "train", "clickprompt.finetune")
    base = seed_digest(_params(), keys)
    assert seed_digest(_params(lr=3e-3), keys) != base
    changed = _params()
    changed["clickprompt"]["finetune"]["train"]["max_epochs"] = 2
    assert seed_digest(changed, keys) != base
    assert seed_digest(_params(), ("data.name", "train")) != base
