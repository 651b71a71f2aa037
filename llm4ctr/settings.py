"""Typed settings read from a params.yaml section, with errors that name the section and the key.

Training loops (zoo trainer, PA-MLM, LEARN tower) each keep their knobs in a dataclass. They share
two checks: a params mapping with a key the dataclass does not know is a typo, not something to
ignore silently; and counts such as ``batch_size`` must be positive. Both live here once.
"""

from __future__ import annotations

from dataclasses import fields

from llm4ctr.errors import ParamsError

# Settings that choose which runs happen or how they look, never what one run learns: left out of a
# stage's resume key (assets.runs) and of a loop's own resumed state (PA-MLM), so adding a seed, turning
# bars off, changing threads or splitting a step into accumulated parts resumes finished work.
RUNTIME_KEYS = frozenset(
    {
        "seeds", "plm_seeds", "progress", "num_threads", "device", "accumulate",
        "checkpoint_every", "log_every", "stop_at",
    }
)  # fmt: skip


class Settings:
    """Mixin for a ``@dataclass`` of settings; ``SECTION`` is its params.yaml path, used in errors."""

    SECTION = "settings"

    @classmethod
    def from_dict(cls, values: dict):
        """Build from a params mapping; an unknown key raises ParamsError listing the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParamsError(f"{cls.SECTION}: unknown setting(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)

    def require_positive(self, *names: str) -> None:
        """Raise ParamsError naming ``<SECTION>.<name>`` for the first of ``names`` that is below 1."""
        for name in names:
            if int(getattr(self, name)) < 1:
                raise ParamsError(f"{self.SECTION}.{name}: expected a positive integer, got {getattr(self, name)!r}")
