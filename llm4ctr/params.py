"""Loading params.yaml, the one source of hyper-parameters, seeds, dataset and model choices.

Overrides use dotted keys (``{"data.name": "ml-1m"}``) so the CLI, Dagster partitions and tests can
change one value without copying the file. Lookups of missing keys raise :class:`ParamsError`
naming the key and the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from llm4ctr.errors import ParamsError

PARAMS_FILE = "params.yaml"


class Params(dict):
    """A params mapping that remembers its source file and answers dotted-key lookups."""

    source: str = PARAMS_FILE

    def get_path(self, key: str, default: Any = ...) -> Any:
        """Return the value at dotted ``key``; raise ParamsError when missing and no default is given."""
        node: Any = self
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not ...:
                    return default
                raise ParamsError(f"{self.source}: missing parameter '{key}'")
            node = node[part]
        return node

    def subset(self, keys: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """The values of ``keys`` (dotted), as a flat dict: what a stage depends on."""
        return {k: self.get_path(k) for k in keys}

    def digest(self, keys: list[str] | tuple[str, ...] | None = None) -> str:
        """A short stable hash of the whole params (or of ``keys``), used as lineage metadata."""
        payload = self.subset(keys) if keys is not None else dict(self)
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def set_path(tree: dict, key: str, value: Any) -> None:
    """Set dotted ``key`` in nested dict ``tree``, creating intermediate dicts."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParamsError(f"cannot set '{key}': '{part}' is not a mapping")
    node[parts[-1]] = value


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (an empty file is an empty mapping); ParamsError naming the file
    when it is not valid YAML."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None


def load_params(path: str | Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Params:
    """Read params.yaml at ``path`` and apply dotted-key ``overrides``."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the project root or pass --params)")
    tree = read_yaml(path)
    if not isinstance(tree, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level, got {type(tree).__name__}")
    tree = copy.deepcopy(tree)
    for key, value in (overrides or {}).items():
        set_path(tree, key, value)
    params = Params(tree)
    params.source = str(path)
    return params


def read_profile(folder: Path, name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The dotted overrides of ``folder/NAME.yaml``, after those of the profiles it ``extends`` (a name or
    a list, applied in order, the profile's own keys last): paper extends full instead of copying it."""
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in Path(folder).glob("*.yaml"))) or "none"
        raise ParamsError(f"{path}: no such profile (known: {known})")
    if name in _seen:
        raise ParamsError(f"{path}: profiles extend each other in a cycle ({' -> '.join((*_seen, name))})")
    own = read_yaml(path)
    if not isinstance(own, dict):
        raise ParamsError(f"{path}: expected a mapping of dotted keys to values")
    parents = own.pop("extends", [])
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged.update(read_profile(folder, parent, (*_seen, name)))
    merged.update(own)
    return merged


def format_override(key: str, value: Any) -> str:
    """``key=value`` that :func:`parse_override` (and DVC's ``-S``) read back as ``value``: strings as
    they are, everything else as JSON."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ParamsError(f"override '{text}' must look like key=value (e.g. data.name=ml-1m)")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)
