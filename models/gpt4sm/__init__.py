"""GPT4SM ("Are GPT Embeddings Useful for Ads and Recommendation?"): a large model's text embeddings put
into a small student encoder as a feature (EaaF), a regulariser (EaaR) or a pre-training task (EaaP).

Parts, one file each: additive_attention.py (the pooler), student.py (frozen lower layers cached, top
layers trained), text_tower.py (a text's vector per strategy), model.py (the CTR model and its
losses), copy_pretrain.py (EaaP's label-free first phase).
"""

from models.gpt4sm.copy_pretrain import CopyConfig, copy_pretrain
from models.gpt4sm.model import GPT4SM, PRETRAINED, STRATEGIES, TEXT_KEYS, regulariser, squared_distance
from models.gpt4sm.student import Student, frozen_states

__all__ = [
    "GPT4SM",
    "PRETRAINED",
    "STRATEGIES",
    "TEXT_KEYS",
    "CopyConfig",
    "Student",
    "copy_pretrain",
    "frozen_states",
    "regulariser",
    "squared_distance",
]
