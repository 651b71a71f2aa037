"""GPT4SM: the losses by hand on 2-row batches, where the teacher may and may not act, the leak-free
histories, and the stages end to end on a generated project with tiny random encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from assets import features, gpt4sm, hidden_states, prompts
from assets.split import split_table
from llm4ctr.errors import DataError, ParamsError
from models.gpt4sm import GPT4SM, CopyConfig, Student, copy_pretrain, regulariser, squared_distance
from tests.fixtures_models import save_tiny
from tests.fixtures_params import PROMPTS_CONFIG, project_params
from tests.fixtures_tables import make_interactions, write_split_files

HIDDEN, TEACHER, TEXTS, TOKENS = 8, 6, 7, 5


def _student() -> Student:
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(TEXTS, TOKENS, HIDDEN, generator=generator)
    mask = torch.ones(TEXTS, TOKENS, dtype=torch.bool)
    mask[2, 3:] = False
    return Student(states, mask)


def _teacher(seed: int = 1) -> torch.Tensor:
    u = F.normalize(torch.randn(TEXTS, TEACHER, generator=torch.Generator().manual_seed(seed)), dim=-1)
    u[0] = 0
    return u


def _model(strategy: str, teacher: torch.Tensor | None = None, reg_weight: float = 0.05) -> GPT4SM:
    torch.manual_seed(0)
    return GPT4SM(
        _student(), _teacher() if teacher is None else teacher, strategy, dim=4, attention_dim=3,
        copy_hidden=5, head_units=(4,), reg_weight=reg_weight,
    )  # fmt: skip


BATCH = {  # 2 rows: candidates 1 and 2; histories [3, 4] and [5, 0 (padding)]; profiles 6 and 6
    "item": torch.tensor([1, 2]),
    "history": torch.tensor([[3, 4], [5, 0]]),
    "profile": torch.tensor([6, 6]),
    "label": torch.tensor([1.0, 0.0]),
}


@torch.no_grad()
def scalar(value: torch.Tensor) -> float:
    """A one-element tensor's value, out of the autograd graph."""
    return value.detach().item()


def _copied(model: GPT4SM, texts: list[int]) -> torch.Tensor:
    tokens, mask = model.student(torch.tensor(texts))
    return model.tower.copied(tokens)


# ---------------------------------------------------------------------- losses by hand
def test_eaar_loss_is_the_half_mean_of_both_sides_by_hand():
    model = _model("eaar", reg_weight=0.05).train()
    u = model.teacher
    d = {t: scalar(((_copied(model, [t])[0] - u[t]) ** 2).sum()) for t in range(1, TEXTS)}
    candidate = (d[1] + d[2]) / 2
    query = (d[3] + d[4] + d[6] + d[5] + d[6]) / 5  # both rows' history items (padding left out) and profiles
    out = model(BATCH)
    assert scalar(out["aux_loss"]) == pytest.approx(0.05 * 0.5 * (query + candidate), rel=1e-5)
    assert scalar(regulariser(torch.tensor([1.0, 3.0, 2.0, 4.0, 6.0, 99.0, 8.0, 10.0]), 2, BATCH["history"])) == (
        pytest.approx(0.5 * ((1 + 3) / 2 + (2 + 4 + 6 + 8 + 10) / 5))
    )  # candidates [1, 3]; slots [2, 4, 6, 99 (padding)]; profiles [8, 10]


def test_copy_loss_is_the_mean_squared_distance_by_hand():
    model = _model("eaap")
    texts = [1, 4]
    by_hand = np.mean([scalar(((_copied(model, [t])[0] - model.teacher[t]) ** 2).sum()) for t in texts])
    assert scalar(model.copy_loss(torch.tensor(texts))) == pytest.approx(by_hand, rel=1e-5)
    assert scalar(squared_distance(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]]))) == 25.0


def test_only_eaar_adds_a_loss_and_only_while_training():
    for strategy in ("vanilla", "eaaf", "eaap", "eaap_copyemb"):
        assert "aux_loss" not in _model(strategy).train()(BATCH)
    assert "aux_loss" not in _model("eaar").eval()(BATCH)
    assert "aux_loss" not in _model("eaar", reg_weight=0.0).train()(BATCH)


def test_eaar_regularises_both_sides():
    """Moving the candidate's teacher vector changes the loss; so does moving a history item's, and the
    gradient reaches the copy head through candidate and query texts alike."""
    base = _model("eaar")
    loss = scalar(base.train()(BATCH)["aux_loss"])
    for text in (1, 3):  # a candidate, a history item
        teacher = base.teacher.clone()
        teacher[text] = -teacher[text]
        assert scalar(_model("eaar", teacher).train()(BATCH)["aux_loss"]) != pytest.approx(loss)
    candidate_only = {**BATCH, "history": torch.zeros_like(BATCH["history"])}
    model = _model("eaar").train()
    model(candidate_only)["aux_loss"].backward()
    assert model.tower.copy.net[0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------- where the teacher acts
def test_vanilla_and_the_copy_strategies_ignore_the_teacher_at_inference():
    other = _teacher(seed=7)
    for strategy in ("vanilla", "eaap", "eaap_copyemb", "eaar"):
        a, b = _model(strategy).eval(), _model(strategy, other).eval()
        assert torch.equal(a(BATCH)["logit"], b(BATCH)["logit"]), strategy
    a, b = _model("eaaf").eval(), _model("eaaf", other).eval()
    assert not torch.allclose(a(BATCH)["logit"], b(BATCH)["logit"])  # EaaF reads it


def test_vanilla_training_ignores_the_teacher():
    logits = []
    for teacher in (_teacher(), _teacher(seed=7)):
        model = _model("vanilla", teacher).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            out = model(BATCH)
            loss = F.binary_cross_entropy_with_logits(out["logit"], BATCH["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        logits.append(model.eval()(BATCH)["logit"])
    assert torch.equal(*logits)


def test_copy_pretraining_moves_only_toward_the_teacher_without_labels():
    model = _model("eaap")
    texts = torch.arange(1, TEXTS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    distance = scalar(model.copy_loss(texts))
    losses = copy_pretrain(model, texts, CopyConfig(epochs=30, lr=1e-2, batch_size=4, seed=0))
    assert scalar(model.copy_loss(texts)) < 0.5 * distance and losses[-1] < losses[0]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(model.copy_state())  # the head, user pool, pooler, P: untouched
    assert not any(k.startswith(("head.", "user_pool.", "tower.pool.", "tower.out.")) for k in changed)


def test_each_distinct_text_is_encoded_once_and_chunks_agree():
    model = _model("eaar").eval()
    texts = torch.tensor([3, 1, 3, 6, 2, 1])
    distinct, inverse, h, c = model.encode(texts)
    assert distinct.tolist() == [1, 2, 3, 6]
    h, c = h[inverse], c[inverse]
    for i, t in enumerate(texts.tolist()):
        tokens, mask = model.student(torch.tensor([t]))
        alone_h, alone_c = model.tower(tokens, mask, model.teacher[[t]])
        torch.testing.assert_close(h[i], alone_h[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c[i], alone_c[0], atol=1e-5, rtol=1e-5)


def test_trainable_top_layers_match_the_encoder(tmp_path: Path):
    """A student with one trainable layer reproduces the full encoder's last layer on every real token."""
    from transformers import AutoModel, AutoTokenizer

    from models.gpt4sm import frozen_states

    path = save_tiny(tmp_path / "bert", "bert")
    encoder, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    texts = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9"]
    states, mask = frozen_states(encoder, tokenizer, texts, 1, 16)
    student = Student.from_encoder(encoder, states, mask, 1).eval()
    full, full_mask = frozen_states(encoder, tokenizer, texts, 0, 16)
    out, out_mask = student(torch.arange(3))
    assert torch.equal(out_mask, full_mask[:, : out_mask.shape[1]])
    torch.testing.assert_close(out[out_mask], full[:, : out.shape[1]][out_mask], atol=1e-5, rtol=1e-4)
    assert any(p.requires_grad for p in student.parameters())
    with pytest.raises(ParamsError, match="exceeds"):
        frozen_states(encoder, tokenizer, texts, 3, 16)


# ---------------------------------------------------------------------- histories
def _splits() -> dict[str, pd.DataFrame]:
    row = dict(rating=4.0, scenario="s", gender="M", age=30, occupation="x", zip="1", genres="Drama", year=1990)
    train = pd.DataFrame(
        [
            dict(user_id="u", item_id=i, label=lab, timestamp=t, title=f"t{i}", **row)
            for i, lab, t in (("a", 1, 1), ("b", 1, 2), ("c", 0, 3), ("d", 1, 4), ("e", 1, 5))
        ]
        + [dict(user_id="v", item_id="a", label=0, timestamp=1, title="ta", **row)]
    )
    valid = pd.DataFrame([dict(user_id="u", item_id="f", label=1, timestamp=0, title="tf", **row)])
    test = pd.DataFrame([dict(user_id="u", item_id="g", label=1, timestamp=9, title="tg", **row),
                         dict(user_id="v", item_id="b", label=1, timestamp=9, title="tb", **row)])  # fmt: skip
    return {"train": train, "valid": valid, "test": test}


def test_histories_hold_only_other_liked_training_items():
    splits = _splits()
    items = pd.DataFrame({"item_id": list("abcdefg"), "text": [f"item {i}" for i in "abcdefg"]})
    texts = gpt4sm.Texts(items, pd.DataFrame({"user_id": ["u", "v"], "text": ["p u", "p v"]}))
    row = {i: r for i, r in texts.item_row.items()}
    histories = gpt4sm.liked_histories(splits, texts, 2)
    a, b, d, e = row["a"], row["b"], row["d"], row["e"]
    assert histories["train"].tolist() == [[d, e], [d, e], [d, e], [b, e], [b, d], [0, 0]]  # a row never lists itself
    assert histories["valid"].tolist() == [[d, e]]  # neither f (valid) nor g (test), however early or late
    assert histories["test"].tolist() == [[d, e], [0, 0]]  # v liked nothing in training
    wide = gpt4sm.liked_histories(splits, texts, 5)
    assert wide["train"][0].tolist() == [b, d, e, 0, 0] and wide["test"][0].tolist() == [a, b, d, e, 0]
    assert set(wide["test"][0]) - {0} <= {row[i] for i in "abde"}  # liked training items only (c was disliked)


def test_a_row_whose_text_is_missing_names_it():
    profiles = pd.DataFrame({"user_id": ["u"], "text": ["p"]})
    texts = gpt4sm.Texts(pd.DataFrame({"item_id": ["a"], "text": ["x"]}), profiles)
    with pytest.raises(DataError, match="no item text for 'b'"):
        texts.rows(texts.item_row, pd.Series(["a", "b"]), "item")


# ---------------------------------------------------------------------- the stages
TINY = {
    "train.seeds": [1, 2],
    "train.max_epochs": 2,
    "train.patience": 1,
    "train.progress": False,
    "ctr.hparams": {"dcnv2": {"embedding_dim": 4, "num_cross_layers": 1, "hidden_units": [8]}},
    "prompts.config": PROMPTS_CONFIG,
    "gpt4sm.history_len": 4,
    "gpt4sm.dim": 8,
    "gpt4sm.attention_dim": 6,
    "gpt4sm.copy_hidden": 8,
    "gpt4sm.head_units": [8],
    "gpt4sm.max_length": 16,
    "gpt4sm.pretrain.epochs": 2,
    "gpt4sm.train.batch_size": 64,
    "hidden_states.batch_size": 8,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """Split, features, prompts, and a tiny BERT as both student and teacher; the teacher stage run."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gpt4sm")
    bert = save_tiny(root / "bert", "bert")
    overrides = {**TINY, "plm.name": bert, "hidden_states.teacher.model": bert,
                 "hidden_states.store": str(root / "store")}  # fmt: skip
    table = make_interactions(n_users=30, n_items=20, per_user=10, scenarios="age")
    write_split_files(root, split_table(table, "random", [0.8, 0.1, 0.1], 0))
    params = project_params(overrides)
    features.run(params, root)
    prompts.run(params, root)
    hidden_states.run_teacher(params, root)
    return root, overrides


def test_teacher_stage_exports_items_and_profiles(project):
    root, _ = project
    folder = root / "artifacts" / "hidden_states_teacher" / "ml-100k"
    for kind, column in (("item", "item_id"), ("profile", "user_id")):
        index = pd.read_parquet(folder / kind / "index.parquet")
        source = pd.read_parquet(root / "artifacts" / "prompts" / "ml-100k" / f"{kind}.parquet")
        assert index[column].tolist() == source[column].tolist()
    profile = pd.read_parquet(root / "artifacts" / "prompts" / "ml-100k" / "profile.parquet")
    assert profile["text"].str.startswith("Age: ").all() and profile["text"].str.contains("Occupation: ").all()


def test_stages_train_every_variant_and_the_baseline(project):
    root, overrides = project
    params = project_params(overrides)
    summary = gpt4sm.pretrain(params, root)
    assert all(summary[f"seed{s}_distance_after"] < summary[f"seed{s}_distance_before"] for s in (1, 2))
    test_rows = len(pd.read_parquet(root / "artifacts" / "split" / "ml-100k" / "test.parquet"))
    for variant in ("vanilla", "eaaf", "eaar", "eaap", "eaap_copyemb", "dcnv2_teacher"):
        gpt4sm.run(params, root, variant)
        out = root / "artifacts" / "gpt4sm" / "ml-100k" / variant
        predictions = pd.read_parquet(out / "predictions.parquet")
        assert sorted(predictions["seed"].unique()) == [1, 2]
        assert (predictions["split"] == "test").sum() == 2 * test_rows
        assert predictions["prob"].between(0, 1).all()
        record = json.loads((out / "summary.json").read_text())
        assert record["teacher_at_inference"] == (variant in ("eaaf", "dcnv2_teacher"))
    from safetensors.torch import load_file

    copied = root / "artifacts" / "gpt4sm_pretrain" / "ml-100k" / "seed1" / gpt4sm.COPY_WEIGHTS
    finetuned = load_file(str(root / "artifacts" / "gpt4sm" / "ml-100k" / "eaap" / "seed1" / "model.safetensors"))
    assert set(load_file(str(copied))) <= set(finetuned)


def test_unknown_variants_and_missing_inputs_name_themselves(project, tmp_path):
    root, overrides = project
    params = project_params(overrides)
    with pytest.raises(ParamsError, match="unknown variant 'eaax'"):
        gpt4sm.run(params, root, "eaax")
    with pytest.raises(ParamsError, match="trainable_layers"):
        bad = project_params({**overrides, "gpt4sm.trainable_layers": -1})
        gpt4sm.build_student(bad, root, gpt4sm.Texts.read(root, "ml-100k"))
    with pytest.raises(DataError, match="hidden_states_teacher"):
        gpt4sm.teacher_table(params, tmp_path, gpt4sm.Texts.read(root, "ml-100k"))


TWO_PROCESS_SCRIPT = """
import json, os, sys
from pathlib import Path

import torch

from assets import gpt4sm
from models.distributed import process_group
from tests.fixtures_params import project_params

torch.set_num_threads(1)
root, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
with process_group():  # what `llm4ctr stage` joins under torchrun
    for variant in sys.argv[3:]:
        gpt4sm.run(project_params(overrides), root, variant)
"""


def test_stages_with_two_processes_match_one(project, tmp_path):
    """The student and the zoo model with the teacher's features train under 2 gloo ranks (each a strided
    share of every batch, DDP-averaged gradients) to one process's predictions."""
    import shutil

    from tests.fixtures_distributed import torchrun

    root, overrides = project
    variants = ["eaar", "dcnv2_teacher"]
    for variant in variants:
        gpt4sm.run(project_params(overrides), root, variant)
    two = tmp_path / "two"
    keep = {"split", "features", "prompts", "hidden_states_teacher"}
    shutil.copytree(root / "artifacts", two / "artifacts", ignore=lambda d, names: [
        n for n in names if Path(d) == root / "artifacts" and n not in keep])  # fmt: skip
    (tmp_path / "two_process.py").write_text(TWO_PROCESS_SCRIPT)
    torchrun(tmp_path / "two_process.py", two, json.dumps(overrides), *variants, timeout=600)
    for variant in variants:
        one_rows = pd.read_parquet(root / "artifacts" / "gpt4sm" / "ml-100k" / variant / "predictions.parquet")
        two_rows = pd.read_parquet(two / "artifacts" / "gpt4sm" / "ml-100k" / variant / "predictions.parquet")
        pd.testing.assert_frame_equal(two_rows, one_rows, check_exact=False, atol=1e-5, rtol=0)
