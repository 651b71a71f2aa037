"""Process environment defaults: telemetry off for every tool we drive, offline model hub by default."""

from __future__ import annotations

import os

TELEMETRY_OFF = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",  # evidently
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "False",  # great_expectations (its projects also say analytics_enabled: false)
}
OFFLINE_HUB = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cores() -> int:
    """The CPU cores this process may use (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def apply_defaults() -> None:
    """Turn telemetry off and the HF hub offline unless the user already set these variables."""
    for key, value in {**TELEMETRY_OFF, **OFFLINE_HUB}.items():
        os.environ.setdefault(key, value)
