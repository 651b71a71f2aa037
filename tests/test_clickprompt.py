"""ClickPrompt on tiny random PLMs: prompts, fusion, PA-MLM masking and training, both finetuning modes."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DynamicCache,
    MPNetConfig,
    MPNetForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from models.clickprompt import (
    PAMLM,
    ClickPromptNet,
    ClickPromptWithPLM,
    PretrainConfig,
    PromptGenerator,
    mask_tokens,
    pretrain,
    pretrained_ctr,
    prompted_states,
    split_masked_lm,
    text_position_ids,
    trim_padding,
)
from models.ctr import DCNv2, build_model
from models.trainer import TrainConfig, Trainer, load_model, save_model
from tests.fixtures_ctr import TINY, encoded, head
from tests.fixtures_distributed import torchrun

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
VOCAB = 120
K = 3
TINY_PLM = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 80,
}


def _masked_lm(kind: str = "bert", seed: int = 0):
    torch.manual_seed(seed)
    if kind == "bert":
        return BertForMaskedLM(BertConfig(**TINY_PLM, pad_token_id=PAD))
    if kind == "roberta":
        return RobertaForMaskedLM(RobertaConfig(**TINY_PLM, pad_token_id=1, bos_token_id=0, eos_token_id=2))
    return MPNetForMaskedLM(MPNetConfig(**TINY_PLM, pad_token_id=1, relative_attention_num_buckets=32))


def _ctr(name: str = "dcnv2", seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, encoded()[0].vocab_sizes, **TINY[name])


def _net(num_prompts: int = K, mode: str = "layerwise", ctr: str = "dcnv2", kind: str = "bert", seed: int = 0):
    encoder, mlm_head = split_masked_lm(_masked_lm(kind, seed))
    return ClickPromptNet(_ctr(ctr, seed), encoder, num_prompts, mode).eval(), mlm_head


def _texts(rows: int, seed: int = 0, length: int = 12) -> dict[str, np.ndarray]:
    """[CLS] words [SEP] then padding; lengths vary so trimming and masks matter."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, length), dtype=np.int64)
    mask = np.zeros((rows, length), dtype=np.int64)
    for r in range(rows):
        n = int(rng.integers(4, length - 1))
        ids[r, 0], ids[r, n + 1] = CLS, SEP
        ids[r, 1 : n + 1] = rng.integers(len(SPECIAL), VOCAB, n)
        mask[r, : n + 2] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _arrays(split: int = 1, rows: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of the CTR fixture (1 = train, 2 = valid, 3 = test) with texts attached."""
    return {**head(encoded()[split], rows), **_texts(rows, seed)}


def _described(rows: int) -> dict[str, np.ndarray]:
    """Training rows with texts that describe them ("user is <u> . item is <i> . gender is <g>"), as in
    ClickPrompt: the words are predictable from the frame and from the IDs, so MLM has something to learn."""
    arrays = head(encoded()[1], rows)
    words = [
        np.full(rows, CLS),
        np.full(rows, 10),
        np.full(rows, 11),
        20 + arrays["user_id"] % 40,
        np.full(rows, 12),
        np.full(rows, 13),
        np.full(rows, 11),
        60 + arrays["item_id"] % 40,
        np.full(rows, 12),
        np.full(rows, 14),
        np.full(rows, 11),
        100 + arrays["gender"] % 4,
        np.full(rows, 12),
        np.full(rows, SEP),
    ]
    ids = np.stack(words, axis=1).astype(np.int64)
    return {**{k: v for k, v in arrays.items() if k != "label"}, "input_ids": ids, "attention_mask": np.ones_like(ids)}


def _batch(rows: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in _arrays(rows=rows, seed=seed).items()}


# ---------------------------------------------------------------------- prompt generation and fusion
def test_layerwise_prompts_have_one_key_and_value_prefix_per_layer():
    gen = PromptGenerator(q_dim=20, hidden_size=32, num_layers=2, num_heads=4, num_prompts=K)
    prompts = gen(torch.randn(5, 20))
    assert prompts.shape == (5, 2, 2, 4, K, 8)  # [B, layers, key/value, heads, K, head_dim]
    assert [type(m).__name__ for m in gen.net.net] == ["Linear", "Tanh", "Linear"]
    assert gen.net.net[0].out_features == 32  # hidden size = the PLM hidden size
    cache = DynamicCache()
    for layer in range(2):
        cache.update(prompts[:, layer, 0], prompts[:, layer, 1], layer)
    assert [tuple(layer.keys.shape) for layer in cache.layers] == [(5, 4, K, 8)] * 2
    assert PromptGenerator(20, 32, 2, 4, K, mode="input")(torch.randn(5, 20)).shape == (5, K, 32)


@pytest.mark.parametrize("mode", ["layerwise", "input"])
@pytest.mark.parametrize("ctr", ["dcnv2", "autoint", "dnn"])
def test_text_attends_to_prompts_so_q_changes_the_plm_output(mode, ctr):
    net, _ = _net(mode=mode, ctr=ctr)
    batch = _batch()
    ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        q = net.ctr(batch)["q"]
        a = prompted_states(net.encoder, ids, mask, net.generator(q))
        b = prompted_states(net.encoder, ids, mask, net.generator(q + 1.0))
        out = net(batch)
    assert a.shape == b.shape == (8, ids.shape[1], 32)  # text positions only
    assert (a - b).abs().amax(dim=(1, 2)).min() > 1e-3  # every row moved
    torch.testing.assert_close(out["hidden"], a)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_zero_prompts_reduce_to_the_plain_plm(kind):
    net, _ = _net(num_prompts=0, kind=kind)
    batch = _batch()
    ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
    if kind == "roberta":
        ids = ids.masked_fill(mask == 0, 1)
    with torch.no_grad():
        plain = net.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = net({**batch, "input_ids": ids, "attention_mask": mask})["hidden"]
    assert net.generator is None
    torch.testing.assert_close(hidden, plain, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_text_keeps_its_own_position_ids_under_a_prefix(kind):
    encoder, _ = split_masked_lm(_masked_lm(kind).eval())
    ids = torch.tensor([[CLS, 7, 8, 9, SEP, 1, 1]]) if kind == "roberta" else torch.tensor([[CLS, 7, 8, 9, SEP, 0, 0]])
    positions = text_position_ids(encoder, ids)
    expected = [[2, 3, 4, 5, 6, 1, 1]] if kind == "roberta" else [list(range(7))]  # RoBERTa counts from pad+1
    assert positions.tolist() == expected
    # a prefix that no text token may attend to (mask 0) leaves the text exactly as without one
    mask = (ids != encoder.config.pad_token_id).long()
    cache = DynamicCache()
    for layer in range(2):
        cache.update(torch.randn(1, 4, K, 8), torch.randn(1, 4, K, 8), layer)
    with torch.no_grad():
        plain = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = encoder(
            input_ids=ids,
            attention_mask=torch.cat([torch.zeros(1, K, dtype=torch.long), mask], 1),
            position_ids=positions,
            past_key_values=cache,
        ).last_hidden_state
    torch.testing.assert_close(hidden[mask.bool()], plain[mask.bool()])


def test_mpnet_takes_input_layer_prompts_and_refuses_prefixes():
    net, _ = _net(mode="input", kind="mpnet")
    with torch.no_grad():
        assert net(_batch())["hidden"].shape[-1] == 32
    with pytest.raises(ValueError, match="past_key_values"):
        _net(mode="layerwise", kind="mpnet")


def test_gradients_reach_the_ctr_model_through_the_prompts():
    net, _ = _net()
    net.train()
    net(_batch())["hidden"].pow(2).mean().backward()
    assert net.ctr.embedding.tables["user_id"].weight.grad.abs().sum() > 0
    assert net.ctr.out.weight.grad is None  # the CTR logit is not part of the text path


# ---------------------------------------------------------------------- PA-MLM
def test_masking_statistics_follow_bert():
    data = _texts(20000, seed=1, length=24)
    ids, mask = torch.as_tensor(data["input_ids"]), torch.as_tensor(data["attention_mask"])
    maskable = mask.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
    inputs, labels = mask_tokens(ids, maskable, MASK, VOCAB, generator=torch.Generator().manual_seed(0))
    picked = labels != -100
    assert not picked[~maskable].any()  # specials and padding never picked
    assert (inputs[~maskable] == ids[~maskable]).all()
    assert torch.equal(labels[picked], ids[picked])
    share = picked.sum() / maskable.sum()
    assert abs(share.item() - 0.15) < 0.003
    to_mask = (inputs[picked] == MASK).float().mean().item()
    unchanged = (inputs[picked] == ids[picked]).float().mean().item()
    replaced = 1 - to_mask - unchanged
    assert abs(to_mask - 0.8) < 0.006
    # a random replacement hits the original word with probability 1/VOCAB and then looks unchanged
    assert abs(replaced - 0.1 * (1 - 1 / VOCAB)) < 0.005
    assert abs(unchanged - 0.1 - 0.1 / VOCAB) < 0.005


def test_mlm_head_sees_masked_positions_only():
    net, mlm_head = _net()
    objective = PAMLM(net, mlm_head, MASK, SPECIAL, VOCAB)
    seen = []
    mlm_head.register_forward_hook(lambda module, args, out: seen.append((tuple(args[0].shape), tuple(out.shape))))
    out = objective(_batch(16), generator=torch.Generator().manual_seed(0))
    assert seen == [((out["masked"], 32), (out["masked"], VOCAB))]
    assert 0 < out["masked"] < _texts(16)["attention_mask"].sum()
    assert torch.isfinite(out["loss"]) and out["loss"] > 0


def test_pamlm_loss_decreases_and_resumes_exactly(tmp_path):
    def fresh():
        net, mlm_head = _net(seed=3)
        return PAMLM(net, mlm_head, MASK, SPECIAL, VOCAB, fresh_head_params=("predictions.bias",))

    data = _described(96)
    config = PretrainConfig(
        new_lr=3e-3, plm_lr=3e-3, batch_size=16, epochs=5, warmup=0.1, log_every=5, checkpoint_every=10, progress=False
    )
    objective = fresh()
    summary = pretrain(objective, data, tmp_path / "a", config)
    losses = [h["loss"] for h in summary["history"]]
    assert summary["steps"] == 30 and len(losses) == 6
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    groups = objective.param_groups(1.0, 0.5, 0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(objective.parameters()))  # tied decoder counted once

    # killed after step 20 (the last checkpoint), then resumed: the same weights as the uninterrupted run
    interrupted = fresh()
    calls = {"n": 0}
    original = interrupted.forward

    def dies_at_step_23(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 23:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    interrupted.forward = dies_at_step_23
    with pytest.raises(KeyboardInterrupt):
        pretrain(interrupted, data, tmp_path / "b", config)
    resumed = fresh()
    again = pretrain(resumed, data, tmp_path / "b", config)
    assert again["steps"] == 30 and [h["loss"] for h in again["history"]] == losses
    # paused with stop_at (schedule unchanged), then continued: the same run again
    paused = pretrain(fresh(), data, tmp_path / "c", replace(config, stop_at=15))
    assert (paused["steps"], paused["total_steps"]) == (15, 30)
    continued = fresh()
    pretrain(continued, data, tmp_path / "c", replace(config, checkpoint_every=7))
    for key, value in objective.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(continued.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_resuming_with_other_settings_is_refused(tmp_path):
    from llm4ctr.errors import ParamsError

    net, mlm_head = _net()
    data = {k: v for k, v in _arrays(rows=32).items() if k != "label"}
    pretrain(PAMLM(net, mlm_head, MASK, SPECIAL, VOCAB), data, tmp_path, PretrainConfig(batch_size=16, progress=False))
    net, mlm_head = _net()
    with pytest.raises(ParamsError, match="other settings"):
        pretrain(
            PAMLM(net, mlm_head, MASK, SPECIAL, VOCAB),
            data,
            tmp_path,
            PretrainConfig(batch_size=16, plm_lr=1e-4, progress=False),
        )


# ---------------------------------------------------------------------- checkpoints and finetuning
def test_checkpoint_round_trip_and_ctr_part_is_a_zoo_checkpoint(tmp_path):
    net, _ = _net()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the initial weights
    net.save(tmp_path)
    loaded = ClickPromptNet.load(tmp_path).eval()
    batch = _batch()
    with torch.no_grad():
        a, b = net(batch), loaded(batch)
    torch.testing.assert_close(b["hidden"], a["hidden"], rtol=0, atol=0)
    zoo = load_model(tmp_path / "ctr")
    assert type(zoo) is DCNv2 and zoo.build_config == net.ctr.build_config
    with torch.no_grad():
        torch.testing.assert_close(zoo(batch)["logit"], a["logit"], rtol=0, atol=0)


def test_without_plm_finetunes_into_a_plain_zoo_checkpoint(tmp_path):
    net, _ = _net()
    with torch.no_grad():
        net.ctr.embedding.tables["item_id"].weight.add_(0.05)  # "pre-trained" weights
    net.save(tmp_path / "pretrained")
    model = pretrained_ctr(tmp_path / "pretrained")
    assert type(model) is DCNv2 and model.training
    torch.testing.assert_close(model.embedding.tables["item_id"].weight, net.ctr.embedding.tables["item_id"].weight)
    _, train, valid, test = encoded()
    trainer = Trainer(model, TrainConfig(batch_size=256, max_epochs=2, patience=5, progress=False))
    trainer.fit(train, valid, tmp_path / "work")
    save_model(trainer.model, tmp_path / "served")
    served = load_model(tmp_path / "served")
    assert type(served) is DCNv2
    assert sum(p.numel() for p in served.parameters()) == sum(p.numel() for p in _ctr().parameters())
    np.testing.assert_array_equal(Trainer(served, TrainConfig(progress=False)).predict(test), trainer.predict(test))


def test_with_plm_fuses_both_logits_and_trains_the_ctr_side_through_a_frozen_plm(tmp_path):
    net, _ = _net()
    model = ClickPromptWithPLM(net, pooling="mean", head_units=(16,), plm_lr=0.0)
    out = model(_batch())
    torch.testing.assert_close(out["logit"], 0.5 * out["ctr_logit"] + 0.5 * out["plm_logit"])
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert len(model.param_groups(1e-3)) == 1
    encoder_before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    ctr_before = net.ctr.embedding.tables["user_id"].weight.detach().clone()
    trainer = Trainer(model, TrainConfig(batch_size=32, max_epochs=2, patience=5, lr=3e-3, progress=False))
    result = trainer.fit(_arrays(1, 128), _arrays(2, 64), tmp_path)
    assert result.epochs == 2 and 0.0 < result.best_auc <= 1.0
    assert float(model.alpha.detach()) != 0.5  # alpha learns
    assert not torch.equal(net.ctr.embedding.tables["user_id"].weight, ctr_before)
    for key, value in net.encoder.state_dict().items():
        torch.testing.assert_close(value, encoder_before[key], rtol=0, atol=0, msg=key)
    tuned = ClickPromptWithPLM(_net()[0], plm_lr=3e-5)
    groups = tuned.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 3e-5]
    assert sum(len(g["params"]) for g in groups) == len(list(tuned.parameters()))
    # the trainer takes those groups: the encoder moves, by steps of plm_lr (Adam), not of the trainer's lr
    before = [p.detach().clone() for p in tuned.net.encoder.parameters()]
    Trainer(tuned, TrainConfig(batch_size=32, max_epochs=1, lr=3e-3, progress=False)).fit(
        _arrays(1, 64), _arrays(2, 32), tmp_path / "tuned"
    )
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(tuned.net.encoder.parameters(), before))
    assert 0 < moved < 2 * 3e-5 * 1.5


def test_cls_and_mean_pooling():
    from models.clickprompt import pool

    hidden = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])
    torch.testing.assert_close(pool(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))


PAMLM_SCRIPT = textwrap.dedent("""
    import importlib, json, sys
    from pathlib import Path
    import numpy as np, torch
    from models.clickprompt import PretrainConfig, pretrain
    from tests.test_clickprompt import no_dropout_objective

    torch.set_num_threads(1)
    work, rank = Path(sys.argv[2]), int(__import__("os").environ["RANK"])
    data = dict(np.load(sys.argv[1]))
    saves = []
    loop = importlib.import_module("models.clickprompt.pretrain")  # the package exports a function of that name
    save = loop._save
    loop._save = lambda *args: (saves.append(1), save(*args))
    objective = no_dropout_objective()
    summary = pretrain(objective, data, work, PretrainConfig(**json.loads(sys.argv[3])))
    (work / f"saves-rank{rank}.json").write_text(json.dumps(len(saves)))
    if rank == 0:
        torch.save(objective.state_dict(), work / "weights.pt")
        (work / "history.json").write_text(json.dumps(summary["history"]))
""")


def no_dropout_objective() -> PAMLM:
    """A PA-MLM objective without dropout (ranks draw their own dropout, one process cannot replay it)."""
    torch.manual_seed(3)
    encoder, mlm_head = split_masked_lm(
        BertForMaskedLM(
            BertConfig(**TINY_PLM, pad_token_id=PAD, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        )
    )
    torch.manual_seed(3)
    net = ClickPromptNet(build_model("dnn", encoded()[0].vocab_sizes, **TINY["dnn"]), encoder, K, "layerwise")
    return PAMLM(net, mlm_head, MASK, SPECIAL, VOCAB, fresh_head_params=("predictions.bias",))


def test_pamlm_with_two_processes_matches_one_and_only_rank_0_writes(tmp_path):
    """2 gloo ranks, each a strided half of every global batch masked once: the one-process run's losses
    and weights within float noise (~20 s)."""
    data = _described(60)
    data["attention_mask"][:, -4:] = 0  # one text in ten is long: a share without one is shorter than
    data["attention_mask"][::10, -4:] = 1  # its global batch, and trims differently
    config = {"new_lr": 3e-3, "plm_lr": 3e-3, "batch_size": 16, "epochs": 2, "log_every": 2, "checkpoint_every": 3,
              "progress": False, "num_threads": 1}  # fmt: skip
    np.savez(tmp_path / "data.npz", **data)
    (tmp_path / "pamlm.py").write_text(PAMLM_SCRIPT)
    two_parts = {**config, "accumulate": 2}  # each rank also splits its share in 2 passes: DDP syncs once a step
    torchrun(tmp_path / "pamlm.py", tmp_path / "data.npz", tmp_path / "two", json.dumps(two_parts))

    single = no_dropout_objective()
    summary = pretrain(single, data, tmp_path / "one", PretrainConfig(**config))
    two = tmp_path / "two"
    assert [json.loads((two / f"saves-rank{r}.json").read_text()) for r in (0, 1)] == [3, 0]
    history = json.loads((two / "history.json").read_text())
    assert [h["step"] for h in history] == [h["step"] for h in summary["history"]] == [2, 4, 6, 8]
    np.testing.assert_allclose([h["loss"] for h in history], [h["loss"] for h in summary["history"]], atol=1e-5)
    np.testing.assert_allclose([h["accuracy"] for h in history], [h["accuracy"] for h in summary["history"]])
    weights = torch.load(two / "weights.pt", weights_only=True)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=1e-4, msg=name)
