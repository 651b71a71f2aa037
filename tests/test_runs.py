"""assets.runs.seed_digest: what keys a seed's resumable work dir."""

from __future__ import annotations

from assets.runs import seed_digest
from llm4ctr.params import Params


def _params(**train) -> Params:
    return Params({"data": {"name": "ml-100k"},
                   "train": {"lr": 1e-3, "seeds": [1], "progress": True, "num_threads": 0, **train},
                   "clickprompt": {"finetune": {"plm_seeds": [1], "rows": 10, "train": {"max_epochs": 1}}}})


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
