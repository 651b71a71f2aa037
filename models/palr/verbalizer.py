"""Scores from next-token logits, no text parsing (the LlamaRec / TALLRec verbalizer).

Listwise: one forward pass per list; the score of candidate i is the logit of its label letter after
the answer lead ("Answer: ("). Pointwise: P(Yes) = softmax over the logits of {Yes, No} after the
question; with ``share=True`` the user's prefix runs once and its key/value cache serves every
candidate of that user (the prefix is most of the prompt, so this is most of the cost).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from models.batching import token_batches
from models.palr.causal_lm import CausalLM
from models.palr.prompts import Prompt


def padded(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded [B, T] ids and their attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def last_logits(lm: CausalLM, rows: Sequence[Sequence[int]], token_ids: Sequence[int]) -> torch.Tensor:
    """[B, len(token_ids)] logits of ``token_ids`` after the last token of each row (differentiable
    when called with gradients on: finetuning reads the same quantity it will be scored by)."""
    ids, mask = padded(rows, lm.pad_id, lm.device)
    hidden = lm.model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return lm.token_logits(hidden[torch.arange(len(rows), device=lm.device), mask.sum(1) - 1], list(token_ids))


@torch.inference_mode()
def listwise_scores(lm: CausalLM, prompts: Sequence[Prompt], letter_ids: Sequence[int], batch_tokens: int = 4096):
    """[N, len(letter_ids)] letter logits, one forward pass per prompt (batched by padded tokens)."""
    out = np.zeros((len(prompts), len(letter_ids)), dtype=np.float32)
    for batch in token_batches([len(p) for p in prompts], batch_tokens):
        out[batch] = last_logits(lm, [prompts[i].ids for i in batch], letter_ids).cpu().numpy()
    return out


@torch.inference_mode()
def pointwise_scores(
    lm: CausalLM,
    prefix: Sequence[int],
    rests: Sequence[Sequence[int]],
    yes_no: Sequence[int],
    share: bool = True,
    batch_tokens: int = 4096,
) -> np.ndarray:
    """P(Yes) normalised over {Yes, No} for ``prefix + rest`` of each rest (one user's candidates)."""
    if not rests:
        return np.zeros(0)
    logits = torch.zeros(len(rests), 2)
    if not share:
        for batch in token_batches([len(prefix) + len(r) for r in rests], batch_tokens):
            logits[batch] = last_logits(lm, [list(prefix) + list(rests[i]) for i in batch], yes_no).cpu()
        return torch.softmax(logits, dim=1)[:, 0].double().numpy()
    decoder = lm.model.get_decoder()
    cache = decoder(input_ids=torch.tensor([list(prefix)], device=lm.device), use_cache=True).past_key_values
    n_prefix = len(prefix)
    for batch in token_batches([len(r) for r in rests], batch_tokens):
        ids, mask = padded([rests[i] for i in batch], lm.pad_id, lm.device)
        full_mask = torch.cat([torch.ones(len(batch), n_prefix, dtype=mask.dtype, device=lm.device), mask], dim=1)
        shared = copy.deepcopy(cache)
        shared.batch_repeat_interleave(len(batch))
        hidden = decoder(input_ids=ids, attention_mask=full_mask, past_key_values=shared, use_cache=True)
        last = hidden.last_hidden_state[torch.arange(len(batch), device=lm.device), mask.sum(1) - 1]
        logits[batch] = lm.token_logits(last, list(yes_no)).cpu()
    return torch.softmax(logits, dim=1)[:, 0].double().numpy()
