"""LEARN's torch parts: causal PCH tower, twin-tower variants, InfoNCE, sequences, retrieval, tower
training and resume, the auxiliary-CTR ranker."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm4ctr.errors import DataError
from models.learn import IDTwoTower, LearnRanker, LearnTower, PCHTower, info_nce, load_ranker
from models.learn.retrieval import recall_ndcg, target_ranks
from models.learn.sequences import UserSequences, histories_before, sample_windows
from models.learn.train_tower import Queries, TowerConfig, evaluate, fit_tower, load_tower, seen_matrix
from models.trainer import TrainConfig, Trainer
from tests.fixtures_ctr import TINY, encoded
from tests.fixtures_distributed import torchrun

TOWER = {"model_dim": 16, "output_dim": 8, "num_layers": 2, "num_heads": 2, "dropout": 0.0, "max_len": 8}


def _content(num_items: int = 12, dim: int = 10, seed: int = 0) -> torch.Tensor:
    table = torch.randn(num_items + 1, dim, generator=torch.Generator().manual_seed(seed))
    table[0] = 0
    return F.normalize(table, dim=-1)


# ---------------------------------------------------------------------- the PCH tower
def test_causal_mask_later_items_do_not_change_earlier_outputs():
    torch.manual_seed(0)
    tower = PCHTower(10, **{k: v for k, v in TOWER.items()}).eval()
    x = torch.randn(3, 6, 10)
    changed = x.clone()
    changed[:, 4:] = torch.randn(3, 2, 10)  # positions 4, 5 change
    a, b = tower(x), tower(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3  # later positions do react
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3, 6))  # L2-normalised


def test_user_embedding_is_the_last_real_position_and_ignores_padding():
    torch.manual_seed(0)
    model = LearnTower(_content(), variant=1, **TOWER).eval()
    history = torch.tensor([[3, 5, 7, 0, 0], [3, 5, 7, 9, 2], [0, 0, 0, 0, 0]])
    user = model.user_embedding(history)
    full = model.user_tower(model.item_inputs(history))
    torch.testing.assert_close(user[0], full[0, 2])
    torch.testing.assert_close(user[1], full[1, 4])
    torch.testing.assert_close(user[2], torch.zeros(8))  # empty history
    # padding content never matters: the same real prefix padded differently gives the same embedding
    torch.testing.assert_close(model.user_embedding(torch.tensor([[3, 5, 7]])), user[:1])


def test_variant_1_shares_the_user_tower_as_item_tower():
    torch.manual_seed(0)
    model = LearnTower(_content(), variant=1, **TOWER).eval()
    assert model.item_tower is None
    items = torch.tensor([4, 9])
    # an item alone = a one-item history read by the (shared) user tower
    torch.testing.assert_close(model.item_embedding(items), model.user_embedding(items.unsqueeze(1)))
    # training: targets are read causally as a sequence by the same weights
    targets = torch.tensor([[4, 9]])
    out = model({"history": torch.tensor([[1, 2]]), "targets": targets})
    torch.testing.assert_close(out["items"][0], model.user_tower(model.item_inputs(targets))[0])
    before = model.item_embedding(items).clone()
    with torch.no_grad():
        model.user_tower.adaptor_out.weight.mul_(-1.0)  # change the USER tower only
        model.user_tower.adaptor_out.bias.mul_(-1.0)
    torch.testing.assert_close(model.item_embedding(items), -before)  # the item side changed with it


def test_variant_2_has_its_own_tower_on_single_items_and_variant_3_uses_raw_content():
    torch.manual_seed(0)
    content = _content()
    v2 = LearnTower(content, variant=2, **TOWER).eval()
    assert v2.item_tower is not None
    assert not {id(p) for p in v2.item_tower.parameters()} & {id(p) for p in v2.user_tower.parameters()}
    targets = torch.tensor([[4, 9, 2]])
    alone = v2.item_embedding(targets[0])
    torch.testing.assert_close(v2({"history": torch.tensor([[1]]), "targets": targets})["items"][0], alone)

    v3 = LearnTower(content, variant=3, **TOWER).eval()
    assert v3.output_dim == content.shape[1]  # the user lands in the content space
    torch.testing.assert_close(v3.item_embedding(torch.tensor([4, 9])), content[[4, 9]])
    assert v3.user_embedding(torch.tensor([[1, 2]])).shape == (1, content.shape[1])
    frozen = [n for n, p in v3.named_parameters() if not p.requires_grad]
    assert frozen == ["item_inputs.weight"]  # the LLM content stays frozen


def test_bad_variant_and_temperature_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        LearnTower(_content(), variant=4)
    with pytest.raises(ValueError, match="temperature"):
        LearnTower(_content(), temperature=0.0)


# ---------------------------------------------------------------------- InfoNCE
def test_info_nce_equals_a_hand_computed_value():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]]])  # user 0 -> item 5, user 1 -> item 7
    targets = torch.tensor([[5], [7]])
    tau = 0.5
    # user 0: positive s=1, negative (item 7) s=0.6; user 1: positive s=0.8, negative (item 5) s=0
    l0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0.6 / tau)))
    l1 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(0.0 / tau)))
    assert info_nce(user, items, targets, tau).item() == pytest.approx((l0 + l1) / 2, abs=1e-6)


def test_info_nce_masks_same_item_entries_own_positives_and_padding():
    torch.manual_seed(0)
    user = F.normalize(torch.randn(3, 4), dim=-1)
    items = F.normalize(torch.randn(3, 2, 4), dim=-1)
    tau = 0.1
    # user 1 also has item 5 (user 0's positive); user 2's second slot is padding
    targets = torch.tensor([[5, 6], [5, 8], [9, 0]])
    logits = user @ items.reshape(6, 4).T / tau
    expected = []
    negatives = {0: [3, 4], 1: [1, 4], 2: [0, 1, 2, 3]}  # slots that hold none of the user's items
    for b, slots in ((0, [0, 1]), (1, [2, 3]), (2, [4])):
        for p in slots:
            denominator = torch.logsumexp(torch.cat([logits[b, [p]], logits[b, negatives[b]]]), dim=0)
            expected.append(denominator - logits[b, p])
    torch.testing.assert_close(info_nce(user, items, targets, tau), torch.stack(expected).mean())
    # a same-item slot of another user never acts as a negative: moving its embedding changes nothing for user 0
    moved = items.clone()
    moved[1, 0] = -moved[1, 0]
    single = lambda it: info_nce(user[:1], it[:1], targets[:1], tau)  # noqa: E731
    assert single(items) == single(moved)


def test_info_nce_logq_correction_subtracts_log_frequency_from_every_logit():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]]])
    targets = torch.tensor([[5], [7]])
    log_q = torch.log(torch.tensor([[0.25], [0.75]]))  # item 7 is the frequent one
    tau = 0.5
    l0 = -math.log(
        math.exp(1 / tau - math.log(0.25)) / (math.exp(1 / tau - math.log(0.25)) + math.exp(0.6 / tau - math.log(0.75)))
    )
    l1 = -math.log(
        math.exp(0.8 / tau - math.log(0.75))
        / (math.exp(0.8 / tau - math.log(0.75)) + math.exp(0.0 / tau - math.log(0.25)))
    )
    assert info_nce(user, items, targets, tau, log_q).item() == pytest.approx((l0 + l1) / 2, abs=1e-6)


def test_info_nce_needs_a_target():
    with pytest.raises(ValueError, match="no target"):
        info_nce(torch.ones(1, 2), torch.ones(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), 0.05)


# ---------------------------------------------------------------------- sequences and retrieval
def _seqs() -> UserSequences:
    # user a: items 1,2,3,4,5 at times 10..50 (given out of order); user b: items 6,7 at times 5, 5
    return UserSequences.build(["a", "a", "a", "a", "a", "b", "b"], [3, 1, 2, 5, 4, 6, 7], [30, 10, 20, 50, 40, 5, 5])


def test_sequences_are_in_time_order_and_histories_are_strictly_earlier():
    seqs = _seqs()
    assert seqs.items["a"].tolist() == [1, 2, 3, 4, 5]
    assert seqs.items["b"].tolist() == [6, 7]
    history = histories_before(seqs, ["a", "a", "a", "b", "c"], [30, 45, 10, 6, 99], history_len=3)
    assert history.tolist() == [[1, 2, 0], [2, 3, 4], [0, 0, 0], [6, 7, 0], [0, 0, 0]]


def test_training_windows_cut_history_then_targets():
    seqs = _seqs()
    history, targets = sample_windows(seqs, history_len=2, target_len=2, rng=np.random.default_rng(0))
    for h, t in zip(history, targets):
        seq = (seqs.items["a"] if h[0] in range(1, 6) else seqs.items["b"]).tolist()
        real_h, real_t = [x for x in h if x], [x for x in t if x]
        cut = seq.index(real_t[0])
        assert real_h == seq[max(0, cut - 2) : cut]  # history: the (up to) 2 items before the cut
        assert 1 <= len(real_t) <= 2 and real_t == seq[cut : cut + len(real_t)]  # targets: what follows
    # every item after the first of a user is a target exactly once per epoch
    assert sorted(x for x in targets.ravel() if x) == [2, 3, 4, 5, 7]


def test_retrieval_ranks_skip_seen_items_and_metrics_match_by_hand():
    item_emb = torch.tensor([[0.0], [5.0], [4.0], [3.0], [2.0], [1.0]])  # item i scores 6 - i for a user of 1
    user_emb = torch.tensor([[1.0], [1.0]])
    seen = torch.zeros(2, 6, dtype=torch.bool)
    seen[0, 1] = True  # user 0 saw item 1 in training: not a candidate
    ranks = target_ranks(user_emb, item_emb, np.array([3, 3]), seen, np.array([0, 1]))
    assert ranks.tolist() == [1, 2]
    metrics = recall_ndcg(np.array([0, 2, 12]), k=10)
    assert metrics["recall@10"] == pytest.approx(2 / 3)
    assert metrics["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(4)) / 3)


# ---------------------------------------------------------------------- tower training
def _toy_data(num_items: int = 30, users: int = 60, length: int = 8, seed: int = 0):
    """Users walk i -> i+1 (mod num_items) from a random start: the next item is predictable."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        start = int(rng.integers(num_items))
        rows += [(f"u{u}", (start + k) % num_items + 1, 100 + k) for k in range(length + 2)]
    train = [r for r in rows if r[2] < 100 + length]
    held = [r for r in rows if r[2] == 100 + length]
    seqs = UserSequences.build(*zip(*train))
    user_rows = {f"u{u}": u for u in range(users)}
    users_h, items_h, times_h = zip(*held)
    queries = Queries.build(seqs, users_h, items_h, times_h, user_rows, history_len=4)
    return seqs, queries, seen_matrix(seqs, user_rows, num_items)


def test_tower_training_learns_and_resumes_to_the_same_result(tmp_path):
    torch.set_num_threads(1)
    seqs, queries, seen = _toy_data()
    hp = {**TOWER, "max_len": 4}
    config = TowerConfig(lr=5e-3, batch_size=32, max_epochs=6, patience=10, history_len=4, target_len=2, progress=False)

    torch.manual_seed(0)
    model = LearnTower(_content(30), variant=2, **hp)
    before = evaluate(model, queries, seen)
    result = fit_tower(model, seqs, queries, seen, config, tmp_path / "full")
    assert result["best"]["ndcg@10"] > before["ndcg@10"] + 0.2  # the walk is learnable
    assert result["best"]["recall@10"] > 0.8

    torch.manual_seed(0)
    first = LearnTower(_content(30), variant=2, **hp)
    fit_tower(first, seqs, queries, seen, TowerConfig(**{**config.__dict__, "max_epochs": 3}), tmp_path / "part")
    torch.manual_seed(1)  # the resumed model's initial weights must not matter
    resumed_model = LearnTower(_content(30), variant=2, **hp)
    resumed = fit_tower(resumed_model, seqs, queries, seen, config, tmp_path / "part")
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx([h["train_loss"] for h in result["history"]])
    reloaded = load_tower(tmp_path / "part")
    assert evaluate(reloaded, queries, seen) == evaluate(model, queries, seen)


def test_id_tower_trains_and_reloads(tmp_path):
    torch.set_num_threads(1)
    seqs, queries, seen = _toy_data()
    config = TowerConfig(lr=5e-3, batch_size=32, max_epochs=2, history_len=4, target_len=2, progress=False)
    torch.manual_seed(0)
    model = IDTwoTower(30, embedding_dim=8, **{**TOWER, "max_len": 4})
    assert model.item_inputs.weight.requires_grad
    fit_tower(model, seqs, queries, seen, config, tmp_path)
    assert evaluate(load_tower(tmp_path), queries, seen) == evaluate(model, queries, seen)
    with pytest.raises(DataError, match="not a tower checkpoint"):
        load_tower(tmp_path / "nothing")


# ---------------------------------------------------------------------- the auxiliary CTR task in the ranker
def _learn_arrays(arrays: dict, dim: int, seed: int) -> dict:
    """Add a dense [user_emb, item_emb]-shaped feature that carries some of the click signal."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(len(arrays["label"]), dim)).astype(np.float32)
    noise[:, 0] += 1.5 * (arrays["label"] - 0.5)
    return {**arrays, "dense": noise}


def test_learn_ranker_forward_aux_loss_and_checkpoint_round_trip(tmp_path):
    torch.set_num_threads(1)
    encoder, train, valid, test = encoded()
    train, valid, test = (_learn_arrays(a, 6, s) for s, a in enumerate((train, valid, test)))
    torch.manual_seed(0)
    model = LearnRanker(
        encoder.vocab_sizes,
        "dcnv2",
        TINY["dcnv2"],
        learn_dim=6,
        aux_hidden_units=(8, 4),
        aux_head_units=(4,),
        aux_weight=0.5,
    )
    assert model.backbone.embedding.dense.in_features == 6 + 4  # user/item emb + middle vector
    batch = {k: torch.as_tensor(v[:5]) for k, v in train.items()}
    out = model.train()(batch)
    assert out["logit"].shape == (5,) and out["aux_logit"].shape == (5,)
    expected = 0.5 * F.binary_cross_entropy_with_logits(out["aux_logit"], batch["label"])
    torch.testing.assert_close(out["aux_loss"], expected)
    assert "aux_loss" not in model.eval()(batch)

    trainer = Trainer(model, TrainConfig(batch_size=256, max_epochs=3, patience=5, lr=3e-3, progress=False))
    result = trainer.fit(train, valid, tmp_path)
    assert result.best_auc > 0.7
    reloaded = load_ranker(tmp_path)
    np.testing.assert_allclose(Trainer(reloaded, TrainConfig(progress=False)).predict(test), trainer.predict(test))


def test_detached_middle_vector_gets_no_gradient_from_the_ranker():
    encoder, train, _, _ = encoded()
    train = _learn_arrays(train, 6, 0)
    batch = {k: torch.as_tensor(v[:16]) for k, v in train.items() if k != "label"}
    for detach, expect_grad in ((True, False), (False, True)):
        torch.manual_seed(0)
        model = LearnRanker(
            encoder.vocab_sizes, "dcnv2", TINY["dcnv2"], learn_dim=6, aux_hidden_units=(8, 4), detach_middle=detach
        )
        model(batch)["logit"].sum().backward()  # the ranker's output only, no aux loss
        grad = model.aux.bottom.net[0].weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == expect_grad


TOWER_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import torch
    import models.learn.train_tower as loop
    from tests.test_learn import _toy_data, two_process_tower

    torch.set_num_threads(1)
    work, rank = Path(sys.argv[1]), int(os.environ["RANK"])
    writes = []
    write = loop._write_state
    loop._write_state = lambda *args: (writes.append(1), write(*args))
    seqs, queries, seen = _toy_data()
    model, config = two_process_tower()
    result = loop.fit_tower(model, seqs, queries, seen, config, work)
    (work / f"writes-rank{rank}.json").write_text(json.dumps(len(writes)))
    if rank == 0:
        torch.save(model.state_dict(), work / "weights.pt")
        (work / "history.json").write_text(json.dumps(result["history"]))
""")


def two_process_tower() -> tuple[LearnTower, TowerConfig]:
    """A LEARN tower without dropout (ranks draw their own) and an odd batch (uneven shares)."""
    torch.manual_seed(0)
    model = LearnTower(_content(30), variant=2, **{**TOWER, "max_len": 4})
    return model, TowerConfig(
        lr=5e-3, batch_size=31, max_epochs=3, patience=10, history_len=4, target_len=2, progress=False
    )


def test_tower_with_two_processes_matches_one_and_only_rank_0_writes(tmp_path):
    """2 gloo ranks encode a share each; InfoNCE over the gathered batch keeps one process's in-batch
    negatives: the same losses, validation figures and weights within float noise (~15 s)."""
    torch.set_num_threads(1)
    (tmp_path / "tower.py").write_text(TOWER_SCRIPT)
    torchrun(tmp_path / "tower.py", tmp_path / "two")
    seqs, queries, seen = _toy_data()
    model, config = two_process_tower()
    single = fit_tower(model, seqs, queries, seen, config, tmp_path / "one")
    two = tmp_path / "two"
    assert [json.loads((two / f"writes-rank{r}.json").read_text()) for r in (0, 1)] == [3, 0]
    history = json.loads((two / "history.json").read_text())
    for got, want in zip(history, single["history"], strict=True):
        assert got["epoch"] == want["epoch"]
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-5)
        assert got["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-5)
    weights = torch.load(two / "weights.pt", weights_only=True)
    for name, value in model.state_dict().items():
        got = weights[name]
        if name.endswith("in_proj_bias"):  # the key bias has a zero gradient (softmax ignores a shift) that
            third = len(value) // 3  # Adam turns float noise into lr-sized steps: its q and v parts must agree
            got, value = torch.cat([got[:third], got[2 * third :]]), torch.cat([value[:third], value[2 * third :]])
        torch.testing.assert_close(got, value, atol=5e-6, rtol=1e-4, msg=name)
