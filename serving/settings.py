"""How the service runs, read when it starts: params.yaml ``serve:`` with environment overrides.

Workers, batching, timeouts, request limits, the prediction log and the observability switches are
deployment choices, not properties of the model: the service reads them at start-up (each
``bentoml serve``), so changing them means restarting the server, never re-registering the model.

Source: the ``serve:`` section of ``$LLM4CTR_PARAMS`` (default ``./params.yaml``: the project root
under ``make serve``, the bento's own copy in a built bento). Any setting can be overridden by the
environment variable ``LLM4CTR_SERVE_<SETTING IN CAPITALS>``, e.g. ``LLM4CTR_SERVE_WORKERS=4`` or
``LLM4CTR_SERVE_ACCESS_LOG=true``. A bad value, in the file or the environment, stops the server with
an error naming the variable (or file and key) and the value; so does an unknown ``LLM4CTR_SERVE_*``
variable (a typo would otherwise be ignored silently).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm4ctr.errors import ParamsError
from llm4ctr.params import read_yaml

PARAMS_ENV = "LLM4CTR_PARAMS"
ENV_PREFIX = "LLM4CTR_SERVE_"
# setting -> kind: count (integer >= 1), seconds (number > 0), flag (boolean), path (non-empty string)
KINDS = {
    "workers": "count",  # server processes
    "torch_threads": "count",  # intra-op threads per worker
    "max_batch_size": "count",  # adaptive batching: most records per model call
    "max_latency_ms": "count",  # a request queued longer for a batch gets 503
    "timeout_s": "seconds",  # request timeout -> 504
    "max_records": "count",  # records per request -> 400 beyond
    "max_body_bytes": "count",  # request body -> 413 beyond
    "log_dir": "path",  # prediction log root: <log_dir>/<dataset>/
    "log_max_pending": "count",  # scored batches waiting for the log writer; beyond, entries are dropped
    "access_log": "flag",
    "metrics": "flag",  # Prometheus /metrics
    "tracing": "flag",  # OpenTelemetry spans
}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_name(setting: str) -> str:
    """The environment variable that overrides ``setting`` (``workers`` -> ``LLM4CTR_SERVE_WORKERS``)."""
    return ENV_PREFIX + setting.upper()


def params_path(environ: Mapping[str, str] = os.environ) -> Path:
    """$LLM4CTR_PARAMS, else ./params.yaml."""
    return Path(environ.get(PARAMS_ENV) or "params.yaml")


def load(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Every setting of :data:`KINDS`, from the params file's ``serve:`` and the environment; ParamsError
    naming the file and key, or the variable, for a missing or invalid value."""
    path = params_path(environ)
    if not path.is_file():
        raise ParamsError(
            f"{path.absolute()}: serving settings file not found; run from the project root or set {PARAMS_ENV}"
        )
    serve = read_yaml(path).get("serve")
    if not isinstance(serve, dict):
        raise ParamsError(f"{path}: no `serve:` section (the serving settings)")
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in KINDS)
    if unknown:
        raise ParamsError(f"{', '.join(unknown)}: unknown serving setting; known: {', '.join(map(env_name, KINDS))}")
    settings = {}
    for key, kind in KINDS.items():
        variable = env_name(key)
        if variable in environ:
            settings[key] = _parse(environ[variable], kind, variable)
        elif key in serve:
            settings[key] = _check(serve[key], kind, f"{path}: serve.{key}")
        else:
            raise ParamsError(f"{path}: serve.{key} is missing (or set {variable})")
    return settings


def _parse(text: str, kind: str, where: str) -> Any:
    """A setting from the text of an environment variable."""
    raw = text.strip()
    if kind == "flag":
        if raw.lower() in TRUE + FALSE:
            return raw.lower() in TRUE
        return _fail(where, kind, text)
    if kind == "path":
        return _check(raw, kind, where)
    try:
        value = int(raw) if kind == "count" else float(raw)
    except ValueError:
        return _fail(where, kind, text)
    return _check(value, kind, where)


def _check(value: Any, kind: str, where: str) -> Any:
    """``value`` when it is of ``kind``, else ParamsError naming ``where``."""
    ok = {
        "count": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        "seconds": isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf"),
        "flag": isinstance(value, bool),
        "path": isinstance(value, str) and value.strip() != "",
    }[kind]
    return value if ok else _fail(where, kind, value)


def _fail(where: str, kind: str, value: Any):
    expected = {
        "count": "a positive integer",
        "seconds": "a positive number",
        "flag": f"true or false ({'/'.join(TRUE)} or {'/'.join(FALSE)})",
        "path": "a non-empty path",
    }[kind]
    raise ParamsError(f"{where}: expected {expected}, got {value!r}")
