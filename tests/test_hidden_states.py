"""The hidden-state cache on tiny random Llama (decoder) and BERT (encoder) models saved to disk.

Behaviour checked: pooled states equal a plain one-text-at-a-time forward pass; a re-run computes
and loads nothing; a run killed after its first shard resumes to exactly the states of an
uninterrupted run; a changed template recomputes only the changed texts; two torchrun processes
build the same cache as one; the stages export states aligned with the prompts.
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import models.hidden_states as hs
from assets import hidden_states as stage
from assets import prompts as prompts_stage
from assets.pretrained import fingerprint
from assets.tables import read_table, write_table
from llm4ctr.errors import ParamsError
from llm4ctr.params import Params
from models.hidden_states import Encoder, ShardStore, cache_states, read_states
from tests.fixtures_distributed import torchrun
from tests.fixtures_models import WORDS, save_tiny
from tests.fixtures_params import PROMPTS_CONFIG, project_params


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return save_tiny(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    return save_tiny(tmp_path_factory.mktemp("bert"), "bert")


def make_texts(n: int, seed: int = 0, longest: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, longest))) for _ in range(n)]


def encoder(model: str, pooling: str = "last_token", max_length: int = 64) -> Encoder:
    return Encoder(model, fingerprint(model), pooling, max_length)


def run(enc: Encoder, texts: list[str], store: Path, template: str = "t1", batch_size: int = 8, shard_size: int = 16):
    return cache_states(enc, texts, template, store, batch_size=batch_size, shard_size=shard_size, progress=False)


def reference(model_dir: str, text_ids: list[int], pooling: str) -> torch.Tensor:
    """The naive result: one text, no padding, plain AutoModel forward."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        hidden = model(input_ids=torch.tensor([text_ids])).last_hidden_state[0]
    if pooling == "last_token":
        return hidden[-1]
    return torch.nn.functional.normalize(hidden.mean(0), dim=-1)


def test_pool_last_token_and_mean():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(hs.pool(hidden, mask, "last_token"), torch.tensor([[2.0, 3.0], [10.0, 11.0]]))
    mean = hs.pool(hidden, mask, "mean")
    expected = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0], [8.0, 9.0]]), dim=-1)
    assert torch.allclose(mean, expected)
    assert torch.allclose(mean.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("kind,pooling", [("llama", "last_token"), ("bert", "mean")])
def test_batched_states_match_a_plain_forward(kind, pooling, llama, bert, tmp_path):
    model = llama if kind == "llama" else bert
    texts = make_texts(20)
    result = run(encoder(model, pooling), texts, tmp_path)
    states = read_states(result)
    assert states.shape == (20, 32) and result.dim == 32 and result.dtype == "float32"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    for i in (0, 7, 19):  # padded rows in length-sorted batches agree with unpadded single texts
        ids = tokenizer(texts[i])["input_ids"]
        assert result.tokens[i] == len(ids)
        assert torch.allclose(states[i], reference(model, ids, pooling), atol=1e-5)
    if pooling == "mean":
        assert torch.allclose(states.norm(dim=1), torch.ones(20), atol=1e-6)


def test_long_prompts_keep_their_end_for_last_token(llama, tmp_path):
    text = " ".join(WORDS[:100])
    result = run(encoder(llama, "last_token", max_length=16), [text], tmp_path)
    assert result.tokens == [101]  # untruncated count (BOS + 100 words)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(llama)(text)["input_ids"]
    ids = ids[:1] + ids[-15:]  # the tokenizer keeps its BOS; words are cut from the left
    assert torch.allclose(read_states(result)[0], reference(llama, ids, "last_token"), atol=1e-5)


def test_rerun_computes_and_loads_nothing(llama, tmp_path, monkeypatch):
    texts = make_texts(30)
    first = run(encoder(llama), texts + texts[:5], tmp_path)  # duplicates are computed once
    assert (first.hits, first.misses, first.computed_here) == (0, 30, 30)

    def no_model(*args, **kwargs):
        raise AssertionError("a fully cached run must not load the model")

    monkeypatch.setattr(hs, "load", no_model)
    again = run(encoder(llama), texts, tmp_path)
    assert (again.hits, again.misses, again.computed_here) == (30, 0, 0)
    assert torch.equal(read_states(again), read_states(first)[:30])


def test_resume_after_a_kill_gives_identical_states(llama, tmp_path, monkeypatch):
    texts = make_texts(40, seed=1)
    clean = read_states(run(encoder(llama), texts, tmp_path / "clean"))

    real_write = ShardStore.write_shard
    calls = []

    def write_then_die(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt("simulated kill")
        calls.append(1)
        real_write(self, *args, **kwargs)

    monkeypatch.setattr(ShardStore, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(encoder(llama), texts, tmp_path / "killed")
    monkeypatch.setattr(ShardStore, "write_shard", real_write)
    (namespace,) = (tmp_path / "killed").iterdir()
    assert len(list(namespace.glob("shard-*"))) == 1 and not (namespace / hs.MANIFEST).exists()

    resumed = run(encoder(llama), texts, tmp_path / "killed")
    assert resumed.hits == 16 and resumed.computed_here == 24  # one shard of 2 batches of 8 survived
    assert torch.equal(read_states(resumed), clean)


def test_changed_template_recomputes_only_changed_texts(llama, tmp_path):
    texts = make_texts(30, seed=2)
    before = read_states(run(encoder(llama), texts, tmp_path))
    edited = [t + " w1" if i % 3 == 0 else t for i, t in enumerate(texts)]
    after = run(encoder(llama), edited, tmp_path)
    assert (after.hits, after.misses) == (20, 10)
    states = read_states(after)
    unchanged = [i for i in range(30) if i % 3]
    assert torch.equal(states[unchanged], before[unchanged])
    assert not torch.allclose(states[0], before[0])
    renamed = run(encoder(llama), edited, tmp_path, template="t2")  # a new template id: all new keys
    assert renamed.misses == 30


def test_two_torchrun_processes_build_the_same_cache_as_one(llama, tmp_path):
    texts = make_texts(37, seed=3)
    single = run(encoder(llama), texts, tmp_path / "one")
    script = tmp_path / "cache.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            from pathlib import Path
            from models.hidden_states import Encoder, cache_states
            texts = json.loads(Path({str(tmp_path / "texts.json")!r}).read_text())
            enc = Encoder({llama!r}, {single.spec["model_id"]!r}, "last_token", 64)
            run = cache_states(enc, texts, "t1", Path({str(tmp_path / "two")!r}), batch_size=8, shard_size=16,
                               progress=False)
            print("RANK", run.rank, run.computed_here, run.misses)
            """
        )
    )
    (tmp_path / "texts.json").write_text(__import__("json").dumps(texts))
    done = torchrun(script, cwd=tmp_path)
    counts = sorted(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RANK"))
    assert counts == [["0", "21", "37"], ["1", "16", "37"]]  # batches of 8,8,8,8,5: 0,2,4 | 1,3
    (namespace,) = (tmp_path / "two").iterdir()
    assert {p.name.split("-r")[1][:3] for p in namespace.glob("shard-*")} == {"000", "001"}
    merged = run(encoder(llama), texts, tmp_path / "two")  # reads the one manifest rank 0 wrote
    assert merged.misses == 0
    assert torch.equal(read_states(merged), read_states(single))


# ----------------------------------------------------------------------------------------------
# The stages
# ----------------------------------------------------------------------------------------------


def stage_params(model: str) -> Params:
    """params.yaml with ``model`` as both LLM and PLM, on the CPU, with small batches and shards."""
    return project_params({
        "prompts.config": PROMPTS_CONFIG, "prompts.recent_n": 5, "llm.name": model, "plm.name": model,
        "hidden_states.store": "store", "hidden_states.device": "cpu", "hidden_states.dtype": "auto",
        "hidden_states.batch_size": 8, "hidden_states.max_length": 128, "hidden_states.shard_size": 32,
        "hidden_states.user.model": "llm", "hidden_states.user.pooling": "last_token",
        "hidden_states.scenario.model": "llm", "hidden_states.scenario.pooling": "last_token",
        "hidden_states.item.model": "plm", "hidden_states.item.pooling": "mean",
    })  # fmt: skip


def write_prompts(root: Path) -> dict[str, pd.DataFrame]:
    """Hand-made prompt tables, as the prompts stage writes them, with words the tiny tokenizer knows."""
    folder = root / "artifacts" / "prompts" / "ml-100k"
    folder.mkdir(parents=True)
    tables = {
        "user": pd.DataFrame({"user_id": [str(i) for i in range(12)], "text": make_texts(12, seed=4)}),
        "scenario": pd.DataFrame({"scenario": ["a", "b", "c"], "text": make_texts(3, seed=5)}),
        "item": pd.DataFrame({"item_id": [str(i) for i in range(9)], "text": make_texts(9, seed=6)}),
    }
    for kind, table in tables.items():
        write_table(table, folder / f"{kind}.parquet")
    (folder / prompts_stage.TEMPLATES_FILE).write_text(
        '{"user": {"id": "u1"}, "scenario": {"id": "s1"}, "item": {"id": "i1"}}'
    )
    return tables


def test_stages_export_states_aligned_with_prompts(llama, bert, tmp_path):
    tables = write_prompts(tmp_path)
    params = stage_params(llama)
    params["plm"]["name"] = bert
    meta = stage.run_user(params, tmp_path)
    assert (meta["count"], meta["dim"], meta["cache_misses"], meta["cache_hits"]) == (12, 32, 12, 0)
    assert sum(meta["token_histogram"].values()) == 12 and meta["pooling"] == "last_token"
    out = tmp_path / "artifacts" / "hidden_states_user" / "ml-100k"
    states = load_file(out / "states.safetensors")["states"]
    index = read_table(out / "index.parquet")
    assert states.shape == (12, 32) and index["user_id"].tolist() == tables["user"]["user_id"].tolist()
    assert (tmp_path / "store").is_dir()  # the shard store lies outside the stage's outputs

    assert stage.run_user(params, tmp_path)["cache_hits"] == 12
    assert torch.equal(load_file(out / "states.safetensors")["states"], states)

    items = stage.run_item(params, tmp_path)
    item_states = load_file(tmp_path / "artifacts" / "hidden_states_item" / "ml-100k" / "states.safetensors")["states"]
    assert items["pooling"] == "mean" and torch.allclose(item_states.norm(dim=1), torch.ones(9), atol=1e-6)
    assert stage.run_scenario(params, tmp_path)["count"] == 3


def test_a_model_name_as_the_knowledge_source_gives_the_states_of_that_model(llama, tmp_path):
    """hidden_states.<kind>.model names a model directly (the knowledge-source sweep) or a role: the
    same weights give the same states either way."""
    write_prompts(tmp_path)
    params = stage_params(llama)
    out = tmp_path / "artifacts" / "hidden_states_item" / "ml-100k" / "states.safetensors"
    stage.run_item(params, tmp_path)
    by_role = load_file(out)["states"]
    params["hidden_states"]["item"]["model"] = llama
    assert stage.run_item(params, tmp_path)["cache_hits"] == len(by_role)
    assert torch.equal(load_file(out)["states"], by_role)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("pooling", "max", "hidden_states.user.pooling must be one of"),
        ("model", 7, "hidden_states.user.model must be llm or plm or a model name, got 7"),
    ],
)
def test_bad_cache_params_are_named(llama, tmp_path, key, value, message):
    write_prompts(tmp_path)
    params = stage_params(llama)
    params["hidden_states"]["user"][key] = value
    with pytest.raises(ParamsError, match=message):
        stage.run_user(params, tmp_path)
    assert not (tmp_path / "artifacts" / "hidden_states_user").exists()


def test_token_histogram_bins():
    hist = stage.token_histogram([1, 16, 17, 300, 5000])
    assert hist["<=16"] == 2 and hist["17-32"] == 1 and hist["257-512"] == 1 and hist[">4096"] == 1
    assert sum(hist.values()) == 5


def test_a_model_mapped_by_accelerate_gives_the_states_of_one_device(llama, tmp_path):
    """device "map" (Accelerate's device_map="auto": every GPU, then the CPU; here the CPU alone) is the
    path of a model larger than one GPU; it must give the states of a plain load, and refuse torchrun."""
    from models.distributed import Processes

    texts = make_texts(12, seed=9)
    plain = run(encoder(llama), texts, tmp_path / "plain")
    mapped = cache_states(
        Encoder(llama, fingerprint(llama), "last_token", 64, device="map"), texts, "t1", tmp_path / "mapped",
        batch_size=8, shard_size=16, progress=False,
    )  # fmt: skip
    assert torch.equal(read_states(mapped), read_states(plain))
    with pytest.raises(ParamsError, match="spreads one model over every GPU"):
        Processes(rank=0, world=2).device("map", "hidden_states.device", mappable=True)
    with pytest.raises(ParamsError, match="train.device: expected one of"):
        Processes().device("map", "train.device")  # the training loops place whole models


def test_a_padded_token_budget_changes_the_batches_not_the_states(llama, tmp_path):
    texts = make_texts(30, seed=11)
    fixed = run(encoder(llama), texts, tmp_path / "fixed")
    budget = cache_states(encoder(llama), texts, "t1", tmp_path / "budget", batch_size=64, shard_size=16,
                          batch_tokens=96, progress=False)  # fmt: skip
    torch.testing.assert_close(read_states(budget), read_states(fixed), atol=1e-5, rtol=1e-4)
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(llama)
    ids, _ = hs.tokenize(tokenizer, texts, encoder(llama))
    keys = [str(i) for i in range(len(ids))]
    sized = hs.batches(ids, keys, 64, 96)
    assert all(len(b) * max(len(ids[i]) for i in b) <= 96 or len(b) == 1 for b in sized)
    assert hs.batches(ids, keys, 8) == [sorted(range(30), key=lambda i: (-len(ids[i]), keys[i]))[s : s + 8]
                                        for s in range(0, 30, 8)]  # fmt: skip
