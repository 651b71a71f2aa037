"""Multi-scenario backbones, the DN/EP/LLM4MSR enhancements and their builder, on tiny configs."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from llm4ctr.errors import DataError, ParamsError
from models.features import FIRST_ID, FeatureEncoder, default_spec
from models.msr import BACKBONES, MetaLayers, StateTable, all_variants, build_msr, load_msr, parse_variant
from models.trainer import TrainConfig, Trainer
from tests.fixtures_tables import make_interactions, split

LLM_DIM = 12
TINY_BACKBONES = {
    "shared_bottom": {"bottom_units": [16], "tower_units": [8]},
    "mmoe": {"num_experts": 3, "expert_units": [16], "tower_units": [8]},
    "omoe": {"num_experts": 3, "expert_units": [16], "tower_units": [8]},
    "ple": {"num_levels": 2, "shared_experts": 2, "specific_experts": 1, "expert_units": [16], "tower_units": [8]},
    "star": {"hidden_units": [16, 8], "aux_units": [8], "aux_embedding_dim": 4},
    "aitm": {"tower_units": [16, 8]},
}
TINY_ENHANCEMENTS = {
    "plain": {},
    "dn": {"dims": [16], "condition_dim": 4, "meta_hidden": 4},
    "ep": {"hidden_units": [16], "scenario_dim": 4},
    "ours": {"llm_dim": LLM_DIM, "user_dims": [16], "scenario_dims": [8], "meta_hidden": 4},
}


@lru_cache(maxsize=1)
def data():
    """(encoder, train arrays, valid arrays) with three scenarios; cached, never mutate."""
    frame = make_interactions(n_rows=3000, n_users=90, n_items=80, seed=1, scenarios="age")
    train, valid, _ = split(frame)
    encoder = FeatureEncoder.fit(train, default_spec(train.columns))
    return encoder, encoder.transform(train), encoder.transform(valid)


def tensors(arrays: dict, n: int | None = None) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v[:n]) for k, v in arrays.items() if k != "label"}


def make(variant: str, states: bool = True, seed: int = 0):
    """A tiny model of ``variant``; for _ours, random LLM states with users 2 and 3 marked cold."""
    torch.manual_seed(seed)
    encoder = data()[0]
    backbone, enhancement = parse_variant(variant)
    model = build_msr(
        variant,
        encoder.vocab_sizes,
        embedding_dim=4,
        backbone_params=TINY_BACKBONES[backbone],
        enhancement_params=TINY_ENHANCEMENTS[enhancement],
    )
    with torch.no_grad():  # embeddings at a trained model's scale (they start at std 1e-4)
        for table in model.embedding.tables.values():
            table.weight[1:].normal_()
    if enhancement == "ours" and states:
        n_users = encoder.vocab_sizes["user_id"]
        known = torch.ones(n_users, dtype=torch.bool)
        known[:FIRST_ID] = False  # padding and OOV have no state
        known[FIRST_ID : FIRST_ID + 2] = False  # two cold-start users
        model.enhancement.set_llm_states(
            torch.randn(n_users, LLM_DIM) * 3 + 5, known, torch.randn(model.num_scenarios, LLM_DIM)
        )
    return model


def logits(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(batch)["logit"]


def test_variants_cover_six_backbones_times_four_enhancements():
    variants = all_variants()
    assert len(variants) == 24 and set(BACKBONES) == set(TINY_BACKBONES)
    assert variants[:4] == ["shared_bottom", "shared_bottom_dn", "shared_bottom_ep", "shared_bottom_ours"]
    assert parse_variant("star_ours") == ("star", "ours") and parse_variant("shared_bottom") == (
        "shared_bottom",
        "plain",
    )
    with pytest.raises(ParamsError, match="unknown multi-scenario variant"):
        parse_variant("star_xx")


def test_builder_rejects_unknown_hyperparameters_and_fields():
    sizes = data()[0].vocab_sizes
    with pytest.raises(ParamsError, match=r"star: unknown hyper-parameter\(s\) \['depth'\]"):
        build_msr("star", sizes, backbone_params={"depth": 3})
    with pytest.raises(ParamsError, match="scenario_field 'domain'"):
        build_msr("star", sizes, scenario_field="domain")
    with pytest.raises(ParamsError, match="user_field 'uid'"):
        build_msr("star_ours", sizes, enhancement_params={"user_field": "uid"})


@pytest.mark.parametrize("variant", all_variants())
def test_output_is_one_finite_logit_per_row(variant):
    model = make(variant)
    batch = tensors(data()[1], 37)
    out = model.train()(batch)["logit"]
    assert out.shape == (37,) and torch.isfinite(out).all()
    assert logits(model, batch).shape == (37,)


@pytest.mark.parametrize("variant", all_variants())
def test_loss_decreases(variant):
    model = make(variant)
    _, train, _ = data()
    batch, labels = tensors(train, 512), torch.as_tensor(train["label"][:512])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)["logit"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def _scenario_params(model, k: int) -> list[torch.Tensor]:
    """The parameter slices that, by the architecture, only scenario ``k``'s path reads."""
    b = model.backbone
    name = type(b).__name__
    if name == "SharedBottom":
        return list(b.towers[k].parameters())
    if name == "MMoE":
        return [*b.gates[k].parameters(), *b.towers[k].parameters()]
    if name == "OMoE":
        return list(b.towers[k].parameters())
    if name == "PLE":
        return [p for lv in b.levels for m in (lv["specific"][k], lv["gates"][k]) for p in m.parameters()] + list(
            b.towers[k].parameters()
        )
    if name == "STAR":
        return [
            b.norm.scenario_gamma[k],
            b.aux_embedding.weight[k],
            *(w[k] for w in b.scenario_weights),
            *(bias[k] for bias in b.scenario_biases),
        ]
    if name == "AITM":
        return list(b.towers[k].parameters())
    raise AssertionError(name)


@pytest.mark.parametrize("backbone", list(TINY_BACKBONES))
def test_scenario_parameters_change_only_their_scenarios_rows(backbone):
    model = make(backbone)
    batch = tensors(data()[1], 300)
    scenario = model.scenario_index(batch)
    assert set(scenario.tolist()) == {0, 1, 2}
    before = logits(model, batch)
    k = 1
    with torch.no_grad():
        for p in _scenario_params(model, k):
            p.add_(torch.randn_like(p) * 0.5)
    after = logits(model, batch)
    changed = before != after  # bit-exact: untouched paths run the very same ops
    # AITM passes information down the scenario chain: scenario k reaches k, k+1, ... but never k-1
    reached = scenario >= k if backbone == "aitm" else scenario == k
    assert changed[reached].all()
    assert not changed[~reached].any()


@pytest.mark.parametrize("variant", ["shared_bottom", "ple_dn", "star_ep", "aitm_ours"])
def test_changing_a_rows_scenario_changes_that_row_alone(variant):
    model = make(variant)
    batch = tensors(data()[1], 64)
    before = logits(model, batch)
    moved = {k: v.clone() for k, v in batch.items()}
    moved["scenario"][5] = FIRST_ID + (int(batch["scenario"][5]) - FIRST_ID + 1) % model.num_scenarios
    after = logits(model, moved)
    assert not torch.isclose(before[5], after[5])
    keep = torch.arange(64) != 5
    torch.testing.assert_close(before[keep], after[keep])


@pytest.mark.parametrize("variant", ["mmoe_dn", "omoe_ep", "star_ours"])
def test_enhancement_scenario_conditions_reach_only_their_scenario(variant):
    model = make(variant)
    batch = tensors(data()[1], 300)
    scenario = model.scenario_index(batch)
    before = logits(model, batch)
    enhancement = model.enhancement
    with torch.no_grad():
        if variant.endswith("_dn"):
            enhancement.condition.weight[0].add_(1.0)
        elif variant.endswith("_ep"):
            enhancement.scenario_embedding.weight[0].add_(1.0)
        else:
            enhancement.scenarios.states[0].add_(torch.randn(LLM_DIM))
    enhancement.train(False)  # drop the inference cache of _ours after editing its states
    changed = logits(model, batch) != before
    assert changed[scenario == 0].all() and not changed[scenario != 0].any()


def test_user_state_reaches_only_that_users_rows():
    model = make("mmoe_ours")
    batch = tensors(data()[1], 300)
    user = int(batch["user_id"][0])
    before = logits(model, batch)
    with torch.no_grad():
        model.enhancement.users.states[user].add_(torch.randn(LLM_DIM) * 5)
    model.enhancement.train(False)
    changed = logits(model, batch) != before
    mine = batch["user_id"] == user
    assert changed[mine].all() and not changed[~mine].any()


def test_meta_layer_shapes_follow_the_configured_dims():
    # the paper's example: 8256 = 128 x 64 + 64 x 1 weight values, plus 64 + 1 biases
    layers = MetaLayers(cond_dim=20, dims=[128, 64, 1], meta_hidden=8, final_activation=False)
    assert layers.num_params == 128 * 64 + 64 * 1 + 64 + 1
    params = layers.generate(layers.code(torch.randn(3, 20)))
    assert params.shape == (3, layers.num_params)
    (w1, b1), (w2, b2) = layers.unpack(params)
    assert (w1.shape, b1.shape, w2.shape, b2.shape) == ((3, 128, 64), (3, 64), (3, 64, 1), (3, 1))
    assert w1[0].numel() + w2[0].numel() == 8256

    ours = make("star_ours").enhancement
    emb_dim = 4 * len(data()[0].vocab_sizes)
    assert ours.user_layers.shapes == [(emb_dim, 16)] and ours.scenario_layers.shapes == [(emb_dim, 8), (8, 1)]
    assert ours.output_dim == 16 and ours.users.states.shape == (data()[0].vocab_sizes["user_id"], LLM_DIM)


def test_per_row_meta_layers_equal_materialized_weights():
    torch.manual_seed(0)
    layers = MetaLayers(cond_dim=6, dims=[10, 7, 3], meta_hidden=5, final_activation=False)
    x, codes = torch.randn(9, 10), layers.code(torch.randn(9, 6))
    expected = []
    for row, params in zip(x, layers.generate(codes)):
        h = row
        for i, (w, b) in enumerate(layers.unpack(params)):
            h = h @ w + b
            h = torch.relu(h) if i == 0 else h
        expected.append(h)
    torch.testing.assert_close(layers(x, codes), torch.stack(expected))
    groups = torch.tensor([0, 1, 0, 2, 2, 1, 0, 0, 1])
    torch.testing.assert_close(layers.by_group(x, layers.generate(codes[:3]), groups), layers(x, codes[groups]))


def test_inference_paths_agree_for_one_user_and_mixed_batches():
    model = make("ple_ours")
    batch = tensors(data()[1], 200)
    mixed = logits(model, batch)
    one_user = {k: v.clone() for k, v in batch.items()}
    for field in ("user_id", "scenario", "gender", "age", "occupation", "zip"):
        one_user[field][:] = batch[field][0]
    grouped = logits(model, one_user)  # 200 rows of one user: per-user layers materialized once
    rowwise = torch.stack([logits(model, {k: v[i : i + 1] for k, v in one_user.items()}) for i in (0, 7, 199)]).squeeze(
        1
    )
    torch.testing.assert_close(grouped[[0, 7, 199]], rowwise, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(mixed).all()


def test_cold_start_users_get_the_learned_default_state():
    model = make("star_ours")
    table = model.enhancement.users
    cold = torch.tensor([1, FIRST_ID, FIRST_ID + 1])  # OOV and two users without a cached state
    torch.testing.assert_close(table(cold), table.default.expand(3, -1))
    warm = table(torch.tensor([FIRST_ID + 2, FIRST_ID + 3]))
    assert not torch.allclose(warm, torch.zeros_like(warm))

    batch = tensors(data()[1], 50)
    batch["user_id"][:] = torch.tensor([1, FIRST_ID, FIRST_ID + 1, FIRST_ID + 5, FIRST_ID + 6]).repeat(10)
    before = logits(model, batch)
    assert torch.isfinite(before).all()
    with torch.no_grad():
        table.default.add_(1.0)
    model.enhancement.train(False)
    changed = logits(model, batch) != before
    is_cold = batch["user_id"] < FIRST_ID + 2
    assert changed[is_cold].all() and not changed[~is_cold].any()


def test_a_model_without_any_states_still_predicts():
    model = make("aitm_ours", states=False)
    out = logits(model, tensors(data()[1], 20))
    assert torch.isfinite(out).all()


def test_state_table_standardizes_known_rows_and_checks_shapes():
    table = StateTable(5, 3)
    states = torch.tensor([[0.0, 0, 0], [1, 2, 3], [3, 2, 5], [5, 2, 7], [100, 100, 100]])
    known = torch.tensor([False, True, True, True, False])
    table.load(states, known)
    rows = table(torch.tensor([1, 2, 3]))
    torch.testing.assert_close(rows.mean(0), torch.zeros(3))
    torch.testing.assert_close(rows[:, 0], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4, rtol=0)
    assert torch.all(rows[:, 1] == 0)  # a constant dimension is centred, not divided by zero
    with pytest.raises(DataError, match=r"shape \(4, 3\)"):
        table.load(torch.zeros(4, 3))


def test_state_table_global_scale_keeps_the_ratio_of_dimensions():
    table = StateTable(4, 2, scale="global")
    table.load(torch.tensor([[1.0, 10], [3, 10], [1, 14], [3, 14]]))
    rows = table(torch.arange(4))
    torch.testing.assert_close(rows.mean(0), torch.zeros(2))
    torch.testing.assert_close(
        rows.std(0, unbiased=False) / rows.pow(2).mean().sqrt(), torch.tensor([1.0, 2.0]) / 1.5811, atol=1e-4, rtol=0
    )  # one scale for both: dimension 2 keeps twice the spread
    with pytest.raises(ParamsError, match="state_scale"):
        StateTable(4, 2, scale="per-row")


def test_concat_bottom_and_alpha_init_options():
    encoder = data()[0]
    params = {**TINY_ENHANCEMENTS["ours"], "bottom": "concat", "alpha_init": 0.1, "state_scale": "global"}
    model = build_msr(
        "mmoe_ours",
        encoder.vocab_sizes,
        embedding_dim=4,
        backbone_params=TINY_BACKBONES["mmoe"],
        enhancement_params=params,
    )
    ours = model.enhancement
    assert ours.output_dim == ours.input_dim + 16 and model.backbone.input_dim == ours.output_dim
    assert abs(float(ours.alpha.detach()) - 0.1) < 1e-6
    out = logits(model, tensors(data()[1], 40))
    assert out.shape == (40,) and torch.isfinite(out).all()
    for bad in ({"bottom": "sideways"}, {"alpha_init": 1.0}):
        with pytest.raises(ParamsError, match="bottom must be one of"):
            build_msr("mmoe_ours", encoder.vocab_sizes, enhancement_params={**TINY_ENHANCEMENTS["ours"], **bad})


def test_partitioned_norm_uses_each_scenarios_own_batch_statistics():
    model = make("star")
    norm = model.backbone.norm.train()
    x = torch.randn(40, norm.gamma.numel()) * 3 + 1
    out = norm(2, x)
    torch.testing.assert_close(out.mean(0), norm.beta + norm.scenario_beta[2], atol=1e-5, rtol=0)
    assert not torch.allclose(norm.running_mean[2], torch.zeros_like(norm.running_mean[2]))
    assert torch.all(norm.running_mean[0] == 0)  # other scenarios' statistics untouched


def test_inference_cache_follows_weight_changes():
    model = make("shared_bottom_ours")
    batch = tensors(data()[1], 30)
    first = logits(model, batch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.enhancement.user_layers.head.bias.add_(0.3)
    model.train()  # what the trainer does between evaluations
    second = logits(model, batch)
    assert not torch.allclose(first, second)
    model.load_state_dict(state)  # in eval mode: the cache must not survive new weights
    torch.testing.assert_close(logits(model, batch), first)


@pytest.mark.parametrize("variant", ["star_ours", "omoe_ep"])
def test_trainer_checkpoint_round_trip(variant, tmp_path):
    model = make(variant)
    _, train, valid = data()
    trainer = Trainer(model, TrainConfig(max_epochs=2, batch_size=256, progress=False, seed=1))
    result = trainer.fit(train, valid, tmp_path)
    assert result.epochs == 2 and 0.5 < result.best_auc <= 1
    loaded = load_msr(tmp_path)
    batch = tensors(valid, 100)
    torch.testing.assert_close(logits(loaded, batch), logits(trainer.model, batch))
    if variant.endswith("_ours"):  # the LLM states travel inside the checkpoint
        torch.testing.assert_close(loaded.enhancement.users.states, trainer.model.enhancement.users.states)
