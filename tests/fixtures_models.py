"""Tiny randomly initialised Hugging Face models saved to disk (no download), for the hidden-state,
LLM4MSR, ClickPrompt and PALR tests.

A plain module (not a conftest): import it as ``from tests.fixtures_models import ...``.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = [f"w{i}" for i in range(300)]
# The causal kind's vocabulary also holds the words PALR's prompts and verbalizer read: the candidate
# labels A..Z, the answer leads ("Answer: (" splits into Answer / : / () and " Yes" / " No" (one word
# each after the Whitespace pre-tokenizer), so CausalLM.single_tokens finds exactly one token for each.
PROMPT_WORDS = [
    *"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    *["(", ")", ":", "?", ".", ",", ";", "Yes", "No", "Answer", "Reply", "none", "user", "viewer", "movies"],
    *["liked", "disliked", "like", "Will", "the", "these", "They", "User", "profile", "Movies", "Candidate"],
]


def save_tiny(path: Path, kind: str) -> str:
    """A randomly initialised 2-layer Llama (``llama``: the bare decoder; ``causal``: with its LM head)
    or BERT (``bert``) plus a word-level tokenizer, saved as an HF folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaModel,
        PreTrainedTokenizerFast,
    )

    words = [*WORDS, *PROMPT_WORDS] if kind == "causal" else WORDS
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[BOS]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]"
    )
    torch.manual_seed(0)
    sizes = dict(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    if kind == "llama":
        model = LlamaModel(LlamaConfig(**sizes, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0))
    elif kind == "causal":
        config = LlamaConfig(
            **sizes, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=2,
            eos_token_id=None,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    else:
        model = BertModel(BertConfig(**sizes, max_position_embeddings=256))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
