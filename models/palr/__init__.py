"""PALR and the LLM as the recommender: a causal LM writes each user's profile, then ranks candidates
(listwise, the LlamaRec verbalizer: one forward pass, the logits of the candidates' label letters) or
answers "will the user like it? Yes/No" (pointwise, TALLRec: P(Yes) is a click probability).

Parts, one file each: causal_lm.py (loading, the chat frame, the verbalizer's token ids), prompts.py
(prompt texts, oldest-first truncation to the context), verbalizer.py (scoring; pointwise with the
user's prompt prefix shared across candidates through the key/value cache), profiles.py (generated
profiles, cached by content), lora.py (LoRA finetuning on the verbalizer's tokens), ranking.py
(listwise metrics from the target's rank).
"""

from models.palr.causal_lm import CausalLM
from models.palr.lora import LoraConfig, finetune
from models.palr.profiles import ProfileCache
from models.palr.prompts import LETTERS, Prompt, fit_history
from models.palr.ranking import rank_metrics, target_ranks
from models.palr.verbalizer import listwise_scores, pointwise_scores

__all__ = [
    "LETTERS",
    "CausalLM",
    "LoraConfig",
    "ProfileCache",
    "Prompt",
    "finetune",
    "fit_history",
    "listwise_scores",
    "pointwise_scores",
    "rank_metrics",
    "target_ranks",
]
