"""Params for the tests, always built from the project's params.yaml (never a hand-written tree).

A plain module (not a conftest): import it as ``from tests.fixtures_params import ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm4ctr.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "params.yaml"
PROMPTS_CONFIG = str(ROOT / "configs" / "prompts.yaml")  # absolute: the tests' projects lie in tmp folders


def project_params(overrides: dict[str, Any] | None = None) -> Params:
    """params.yaml with the dotted ``overrides`` applied (llm4ctr.params.load_params).

    Every override must name a key params.yaml already has: a key renamed or removed there then fails
    the tests that set it, naming the key (ParamsError), instead of being added beside the new one and
    silently ignored by the stage.
    """
    overrides = dict(overrides or {})
    current = load_params(PARAMS_FILE)
    for key in overrides:
        current.get_path(key)
    return load_params(PARAMS_FILE, overrides)
