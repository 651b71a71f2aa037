"""PALR's parts on a tiny random causal LM: the verbalizer against the full LM head, prefix sharing,
ranks and metrics by hand, history fitting, the profile cache, LoRA finetuning, single-token words.

The stages on a generated project are in tests/test_palr_stages.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from assets.palr import listwise_figures, shuffled
from models.palr import (
    LETTERS,
    CausalLM,
    LoraConfig,
    ProfileCache,
    Prompt,
    fit_history,
    listwise_scores,
    pointwise_scores,
    rank_metrics,
    target_ranks,
)
from models.palr.lora import adapter_state, finetune
from models.palr.verbalizer import last_logits
from tests.fixtures_models import save_tiny


@pytest.fixture(scope="module")
def causal_path(tmp_path_factory) -> str:
    torch.set_num_threads(1)
    return save_tiny(tmp_path_factory.mktemp("causal"), "causal")


@pytest.fixture
def lm(causal_path) -> CausalLM:
    """A fresh copy per test (LoRA wraps ``lm.model`` in place)."""
    return CausalLM.load(causal_path, "tiny-causal", "cpu", "float32")


def _prompt(lm: CausalLM, words: int, seed: int, lead: str = "Answer: (") -> Prompt:
    """A framed prompt of ``words`` random vocabulary words, then the answer lead."""
    rng = np.random.default_rng(seed)
    text = " ".join(f"w{i}" for i in rng.integers(0, 300, words))
    return Prompt(*lm.frame(text, "", lead))


@torch.no_grad()
def _full_head_logits(lm: CausalLM, ids: list[int]) -> torch.Tensor:
    """The full model's logits over the whole vocabulary after the last token of one unpadded row."""
    return lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()


# ---------------------------------------------------------------------- verbalizer
def test_listwise_reads_exactly_the_label_letters_of_the_full_lm_head(lm):
    k = 11  # letters A..K
    letters = lm.single_tokens(list(LETTERS[:k]))
    assert len(set(letters)) == k and lm.tokenizer.unk_token_id not in letters
    prompts = [_prompt(lm, n, seed) for seed, n in enumerate((3, 17, 8, 1, 12))]  # padded batches of mixed lengths
    for batch_tokens in (4096, 30):  # one batch / several
        scores = listwise_scores(lm, prompts, letters, batch_tokens=batch_tokens)
        assert scores.shape == (len(prompts), k)
        for i, prompt in enumerate(prompts):
            expected = _full_head_logits(lm, prompt.ids)[letters].numpy()
            np.testing.assert_allclose(scores[i], expected, rtol=1e-5, atol=1e-5)
    # the letters' logits, not the best tokens of the vocabulary nor another slice of it
    full = _full_head_logits(lm, prompts[0].ids)
    assert not np.allclose(scores[0], full[:k].numpy())


def test_pointwise_probability_is_the_softmax_over_yes_and_no_of_the_full_head(lm):
    yes_no = lm.single_tokens([" Yes", " No"])
    assert yes_no == lm.encode("Yes") + lm.encode("No")
    prefix = _prompt(lm, 9, 0, lead="").prefix
    rests = [lm.frame("", " ".join(["w7"] * n), "Answer:")[1] for n in (1, 4)]
    for share in (True, False):
        got = pointwise_scores(lm, prefix, rests, yes_no, share=share)
        for rest, p in zip(rests, got):
            expected = torch.softmax(_full_head_logits(lm, prefix + rest)[yes_no], dim=0)[0].item()
            assert p == pytest.approx(expected, abs=1e-5)
    assert pointwise_scores(lm, prefix, [], yes_no).shape == (0,)


def test_prefix_shared_pointwise_scores_equal_unshared_ones(lm):
    yes_no = lm.single_tokens([" Yes", " No"])
    prefix = _prompt(lm, 14, 1, lead="").prefix
    rng = np.random.default_rng(3)
    rests = [[int(t) for t in rng.integers(3, 300, n)] for n in (1, 6, 2, 9, 3, 3, 12, 5)]  # different lengths
    unshared_one_batch = pointwise_scores(lm, prefix, rests, yes_no, share=False, batch_tokens=4096)
    for batch_tokens in (12, 25, 4096):  # 12: mostly one rest per batch; 25: a few per batch
        shared = pointwise_scores(lm, prefix, rests, yes_no, share=True, batch_tokens=batch_tokens)
        unshared = pointwise_scores(lm, prefix, rests, yes_no, share=False, batch_tokens=batch_tokens)
        assert shared.shape == (len(rests),)
        np.testing.assert_allclose(shared, unshared, rtol=0, atol=1e-5)
        np.testing.assert_allclose(shared, unshared_one_batch, rtol=0, atol=1e-5)
    assert np.ptp(shared) > 1e-4  # the rests really are scored apart (the check is not vacuous)


def test_single_tokens_names_a_word_of_several_tokens(lm):
    assert lm.single_tokens(["A", "B"]) == [lm.encode("A")[0], lm.encode("B")[0]]
    with pytest.raises(ValueError, match=r"'Yes No' is 2 tokens"):
        lm.single_tokens(["A", "Yes No"])
    with pytest.raises(ValueError, match=r"'w1 w2 w3' is 3 tokens for model tiny-causal"):
        lm.single_tokens(["w1 w2 w3"])
    with pytest.raises(ValueError, match=r"'' is 0 tokens"):
        lm.single_tokens([""])


def test_frame_splits_prefix_and_rest_as_the_model_reads_them(lm):
    prefix, rest = lm.frame("w1 w2", "w3", "Answer: (")
    assert prefix == [lm.tokenizer.bos_token_id, *lm.encode("w1 w2")]  # a base model's BOS, no chat template
    assert rest == lm.encode("w3 Answer: (") and lm.tokenizer.unk_token_id not in rest


def test_generate_reads_the_prompt_as_frame_does(lm):
    seen = []
    original = lm.model.generate

    def spy(inputs, **kwargs):
        seen.append(inputs[0].tolist())
        return original(inputs, **kwargs)

    lm.model.generate = spy
    text, tokens = lm.generate("w1 w2 w3", 2)
    assert tokens == len(seen[0]) and len(text.split()) == 2
    assert seen[0] == lm.frame("w1 w2 w3", "", "")[0] + lm.encode(lm.tail)  # [BOS] w1 w2 w3


# ---------------------------------------------------------------------- ranks and metrics
def test_target_ranks_break_ties_by_list_position_and_miss_when_absent():
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [0.1, 0.5, 0.5, 0.2], [3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    ranks = target_ranks(scores, np.array([2, 1, -1, 3]))
    assert ranks[0] == 1  # tied with the earlier item 1: behind it
    assert ranks[1] == 0  # tied with the later item 2: ahead of it
    assert np.isinf(ranks[2])  # the target is not in the list
    assert ranks[3] == 3  # all tied: its list position
    assert target_ranks(np.array([[0.0, 9.0, 1.0]]), np.array([0])).tolist() == [2.0]


def test_rank_metrics_by_hand_on_three_lists():
    figures = rank_metrics(np.array([0.0, 2.0, np.inf]), cutoffs=(1, 5))
    assert figures["lists"] == 3
    assert figures["hr@1"] == pytest.approx(1 / 3, abs=1e-6)
    assert figures["hr@5"] == pytest.approx(2 / 3, abs=1e-6)
    assert figures["ndcg@1"] == pytest.approx(1 / 3, abs=1e-6)
    assert figures["ndcg@5"] == pytest.approx((1 + 1 / np.log2(4)) / 3, abs=1e-6)  # ranks 0, 2 -> 1, 1/2
    assert figures["mrr"] == pytest.approx((1 + 1 / 3 + 0) / 3, abs=1e-6)
    other = rank_metrics(np.array([4.0, 5.0, 1.0]), cutoffs=(5,))
    assert other["hr@5"] == pytest.approx(2 / 3, abs=1e-6)
    assert other["ndcg@5"] == pytest.approx((1 / np.log2(6) + 1 / np.log2(3)) / 3, abs=1e-6)
    assert other["mrr"] == pytest.approx((1 / 5 + 1 / 6 + 1 / 2) / 3, abs=1e-6)


def _lists() -> tuple[pd.DataFrame, dict[str, float]]:
    """Lists of both protocols over items a..h with distinct popularity; one llamarec list misses its target."""
    popularity = dict(zip("abcdefgh", (8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0)))
    rows = [
        ("u1", "llmrank", ["a", "c", "e", "g"], 0),  # target a: the most popular -> rank 0
        ("u2", "llmrank", ["f", "b", "h", "d"], 0),  # target f: behind b and d -> rank 2
        ("u3", "llmrank", ["h", "a", "b", "c"], 0),  # target h: last -> rank 3
        ("u1", "llamarec", ["b", "a", "d", "c"], 2),  # target d: rank 3
        ("u2", "llamarec", ["a", "b", "c", "e"], -1),  # target f not retrieved
        ("u3", "llamarec", ["g", "h", "e", "c"], 1),  # target h: rank 3
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "protocol", "items", "target_index"])
    return frame, popularity


def test_an_item_scorer_gives_the_same_ranks_under_every_shuffle():
    lists, popularity = _lists()

    def by_popularity(part: pd.DataFrame) -> np.ndarray:
        return np.array(
            [[popularity[i] for i in np.asarray(items)[order]] for items, order in zip(part["items"], part["order"])]
        )

    shuffles = [0, 1, 2, 3, 7]
    figures = listwise_figures(lists, by_popularity, shuffles)
    assert set(figures) == {"llmrank", "llamarec", "llamarec_found"}
    assert figures["llmrank"]["0"] == rank_metrics(np.array([0.0, 2.0, 3.0]))
    assert figures["llamarec"]["0"] == rank_metrics(np.array([3.0, np.inf, 3.0]))
    assert figures["llamarec_found"]["0"] == rank_metrics(np.array([3.0, 3.0]))
    for protocol, by_shuffle in figures.items():
        assert list(by_shuffle) == [str(s) for s in shuffles]
        for shuffle in shuffles[1:]:
            assert by_shuffle[str(shuffle)] == by_shuffle["0"], (protocol, shuffle)
    # the shuffles really reorder the lists
    assert len({tuple(shuffled(4, s, 0)) for s in shuffles}) > 1


def test_a_position_scorer_ranks_the_target_at_its_shuffled_position():
    """A scorer that prefers earlier labels (A first) puts the target at its place in the shuffled list."""
    lists, _ = _lists()

    def by_position(part: pd.DataFrame) -> np.ndarray:
        return -np.tile(np.arange(4, dtype=float), (len(part), 1))

    for shuffle in (1, 2):
        figures = listwise_figures(lists, by_position, [shuffle])
        llmrank = lists[lists["protocol"] == "llmrank"].reset_index(drop=True)
        where = [float(np.flatnonzero(shuffled(4, shuffle, i) == t)[0]) for i, t in enumerate(llmrank["target_index"])]
        assert figures["llmrank"][str(shuffle)] == rank_metrics(np.array(where))


# ---------------------------------------------------------------------- fitting histories
def test_fit_history_drops_oldest_first_and_counts():
    history = [f"i{n}" for n in range(20)]  # oldest first

    def length(items: list[str]) -> int:
        return 7 + 3 * len(items)

    assert fit_history(history, length, 1000) == (history, 0)
    kept, dropped = fit_history(history, length, 7 + 3 * 13)
    assert kept == history[-13:] and dropped == 7  # exactly the newest 13, not fewer
    kept, dropped = fit_history(history, length, 7 + 3 * 13 + 2)  # 13 items and a bit
    assert kept == history[-13:] and dropped == 7
    assert fit_history(history, length, 7) == ([], 20)
    assert fit_history([], length, 7) == ([], 0)
    with pytest.raises(ValueError, match="without any history is 7 tokens, over the limit of 6"):
        fit_history(history, length, 6)
    with pytest.raises(ValueError, match="without any history"):
        fit_history([], length, 6)


def test_fit_history_measures_items_of_different_lengths():
    history = ["aaaaaaaa", "b", "cc", "d", "eeeeeeeeeeeeeeee", "f"]

    def length(items: list[str]) -> int:
        return sum(len(i) for i in items)

    kept, dropped = fit_history(history, length, 17)  # f + eeee... = 17; adding d makes 18
    assert kept == ["eeeeeeeeeeeeeeee", "f"] and dropped == 4


# ---------------------------------------------------------------------- the profile cache
class _Writer:
    """A generate function that counts its calls (or refuses to be called)."""

    def __init__(self, allowed: bool = True):
        self.allowed, self.prompts = allowed, []

    def __call__(self, prompt: str) -> tuple[str, int]:
        assert self.allowed, f"the LLM was called for {prompt!r}"
        self.prompts.append(prompt)
        return f"profile of {prompt}", len(prompt)


def test_profile_cache_second_fill_makes_no_llm_call(tmp_path: Path):
    path = tmp_path / "cache" / "profiles.jsonl"
    prompts = ["p1", "p2", "p1", "p3"]
    first, writer = ProfileCache(path, "model-a", {"max_new_tokens": 8}), _Writer()
    made = first.fill(prompts, writer)
    assert first.calls == 3 and writer.prompts == ["p1", "p2", "p3"]  # each distinct prompt once
    assert made["p2"] == {"key": first.key("p2"), "profile": "profile of p2", "prompt_tokens": 2}
    again = ProfileCache(path, "model-a", {"max_new_tokens": 8})
    assert again.fill(prompts, _Writer(allowed=False)) == made
    assert again.calls == 0
    assert again.fill(["p4", "p1"], writer)["p4"]["profile"] == "profile of p4" and again.calls == 1


def test_profile_cache_does_not_reuse_another_model_or_settings(tmp_path: Path):
    path = tmp_path / "profiles.jsonl"
    ProfileCache(path, "model-a", {"max_new_tokens": 8}).fill(["p1", "p2"], _Writer())
    for model, settings in (("model-b", {"max_new_tokens": 8}), ("model-a", {"max_new_tokens": 9})):
        cache, writer = ProfileCache(path, model, settings), _Writer()
        cache.fill(["p1", "p2"], writer)
        assert cache.calls == 2 and writer.prompts == ["p1", "p2"], (model, settings)
    assert ProfileCache(path, "model-a", {"max_new_tokens": 8}).fill(["p1", "p2"], _Writer(allowed=False))


def _torn_cache(path: Path) -> None:
    """A cache of p1, p2, p3 whose last line was cut short mid-write (no newline)."""
    ProfileCache(path, "m", {}).fill(["p1", "p2", "p3"], _Writer())
    text = path.read_text()
    path.write_text(text[: text.rindex("{") + 25])


def test_profile_cache_ignores_and_regenerates_a_torn_last_line(tmp_path: Path):
    path = tmp_path / "profiles.jsonl"
    _torn_cache(path)
    torn = ProfileCache(path, "m", {})
    assert set(torn.entries) == {torn.key("p1"), torn.key("p2")}
    writer = _Writer()
    made = torn.fill(["p1", "p2", "p3"], writer)
    assert torn.calls == 1 and writer.prompts == ["p3"] and made["p3"]["profile"] == "profile of p3"
    assert made["p1"]["profile"] == "profile of p1"


def test_profile_cache_keeps_the_entry_regenerated_after_a_torn_line(tmp_path: Path):
    path = tmp_path / "profiles.jsonl"
    _torn_cache(path)
    ProfileCache(path, "m", {}).fill(["p1", "p2", "p3"], _Writer())
    after = ProfileCache(path, "m", {})
    after.fill(["p1", "p2", "p3"], _Writer(allowed=False))  # raises AssertionError while the bug is there
    assert after.calls == 0


# ---------------------------------------------------------------------- LoRA
def _examples(lm: CausalLM) -> tuple[list[tuple[Prompt, int]], list[int]]:
    letters = lm.single_tokens(list(LETTERS[:4]))
    return [(_prompt(lm, 4 + seed, seed), seed % 4) for seed in range(6)], letters


def _loss(lm: CausalLM, examples, token_ids) -> float:
    with torch.no_grad():
        logits = last_logits(lm, [p.ids for p, _ in examples], token_ids)
        return float(torch.nn.functional.cross_entropy(logits, torch.tensor([t for _, t in examples])))


def test_lora_lowers_the_loss_and_changes_only_adapter_weights(lm):
    examples, letters = _examples(lm)
    before_loss = _loss(lm, examples, letters)
    base = {k: v.clone() for k, v in lm.model.state_dict().items()}
    config = LoraConfig(r=4, alpha=8, dropout=0.0, lr=2e-2, min_steps=25, batch_size=3, epochs=1)
    losses = finetune(lm, examples, letters, config, seed=0)
    assert len(losses) == config.steps(len(examples)) == 25
    assert not lm.model.training  # left in eval mode, adapters active
    after_loss = _loss(lm, examples, letters)
    assert after_loss < 0.8 * before_loss and np.mean(losses[-5:]) < np.mean(losses[:5])
    trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    seen = 0
    for name, value in lm.model.named_parameters():
        if "lora_" in name:
            continue
        original = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(value, base[original]), name  # base weights identical after
        seen += 1
    assert seen == len(base) - ("lm_head.weight" in base and lm.model.config.tie_word_embeddings)
    state = adapter_state(lm)
    assert state and all("lora_" in k for k in state)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())  # trained (B starts at zero)
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state} == set(config.target_modules)


def test_lora_needs_examples(lm):
    with pytest.raises(ValueError, match="no finetuning examples"):
        finetune(lm, [], lm.single_tokens(["A"]), LoraConfig(), seed=0)


def test_a_causal_lm_mapped_by_accelerate_scores_as_one_device(causal_path, lm):
    mapped = CausalLM.load(causal_path, "tiny-causal", "map", "float32")
    yes_no = lm.single_tokens([" Yes", " No"])
    prompt = _prompt(lm, 14, 1, lead="")
    rests = [[5, 6, 7], [8, 9]]
    np.testing.assert_array_equal(
        pointwise_scores(mapped, prompt.prefix, rests, yes_no, share=True),
        pointwise_scores(lm, prompt.prefix, rests, yes_no, share=True),
    )
