"""A causal LM as the recommender sees it: tokenizer, model, the chat frame around a prompt, and the
token ids the verbalizer reads.

Prompts go through the tokenizer's chat template when it has one (an instruction-tuned model such as
SmolLM2-135M-Instruct), else they are used as they are (a base model such as Gemma-3-270M). The frame
is split into the text before and after the user's message, so a prompt is always tokenized as
``head + prefix | question + tail + answer lead``: the pointwise prefix-shared and unshared paths, and
finetuning, all see exactly the same token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.distributed import MAPPED, Processes, load_pretrained
from models.hidden_states import DTYPES, resolve_dtype

SENTINEL = "\x00MESSAGE\x00"


@dataclass
class CausalLM:
    """A loaded causal LM (``model`` in eval mode) and its tokenizer; ``model_id`` names the weights."""

    model: torch.nn.Module
    tokenizer: object
    model_id: str
    device: torch.device
    head: str = ""  # chat-frame text before the user's message
    tail: str = "\n"  # ... after it, up to where the assistant's answer starts
    _ids: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str, model_id: str, device: str = "auto", dtype: str = "auto") -> CausalLM:
        """Load ``path`` (a folder or hub name ``from_pretrained`` accepts) on ``device`` (auto | cpu | cuda |
        cuda:N | map: spread over the GPUs, then the CPU)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where = Processes.from_env().device(device, "palr.device", mappable=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
        precision = DTYPES[resolve_dtype(dtype, where)]
        model = load_pretrained(AutoModelForCausalLM, path, precision, where, device == MAPPED)
        lm = cls(model, tokenizer, model_id, where)
        if getattr(tokenizer, "chat_template", None):
            framed = tokenizer.apply_chat_template(
                [{"role": "user", "content": SENTINEL}], tokenize=False, add_generation_prompt=True
            )
            lm.head, _, lm.tail = framed.partition(SENTINEL)
        return lm

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @property
    def context(self) -> int:
        """The most tokens the model reads (its position limit)."""
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (the chat frame carries them)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def frame(self, prefix: str, question: str, answer_lead: str) -> tuple[list[int], list[int]]:
        """(prefix ids, rest ids) of one prompt in the chat frame; their concatenation is what the model reads."""
        return self._start() + self.encode(self.head + prefix), self.encode(question + self.tail + answer_lead)

    def _start(self) -> list[int]:
        """[BOS] for a base model without a chat template whose tokenizer adds BOS (Gemma, Llama), else []."""
        if self.head or self.tokenizer.bos_token_id is None:
            return []
        probe = self.tokenizer("a")["input_ids"]
        return [self.tokenizer.bos_token_id] if probe and probe[0] == self.tokenizer.bos_token_id else []

    def token_logits(self, hidden: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
        """The LM head's logits of ``token_ids`` only, from final hidden states [B, H]: the full head
        over the vocabulary would be a fifth of a forward pass, for logits nobody reads."""
        weight = self.model.get_output_embeddings().weight[torch.as_tensor(token_ids, device=hidden.device)]
        logits = hidden @ weight.T
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return (torch.tanh(logits / cap) * cap if cap else logits).float()

    def single_tokens(self, words: list[str]) -> list[int]:
        """The one token id of each word; ValueError naming the word that is not one token for this model."""
        key = tuple(words)
        if key not in self._ids:
            ids = []
            for word in words:
                found = self.encode(word)
                if len(found) != 1:
                    raise ValueError(
                        f"verbalizer word {word!r} is {len(found)} tokens for model {self.model_id}; "
                        "it must be exactly one (change the answer lead or the words in configs/prompts.yaml)"
                    )
                ids.append(found[0])
            self._ids[key] = ids
        return self._ids[key]

    def generate(self, prompt: str, max_new_tokens: int) -> tuple[str, int]:
        """Greedy continuation of ``prompt`` in the chat frame: (text, prompt tokens)."""
        ids = self._start() + self.encode(self.head + prompt + self.tail)
        inputs = torch.tensor([ids], device=self.device)
        with torch.inference_mode():
            out = self.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
            )
        return self.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip(), len(ids)
