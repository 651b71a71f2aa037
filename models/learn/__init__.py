"""LEARN (Kuaishou 2024): frozen-LLM item knowledge adapted to recommendation.

- :mod:`models.learn.pch_tower`: the causal PCH tower and the twin tower (item-tower variants 1-3);
- :mod:`models.learn.id_two_tower`: the same twin tower over learned item IDs (the baseline);
- :mod:`models.learn.infonce`: InfoNCE with in-batch negatives and same-item masking;
- :mod:`models.learn.sequences`: training histories, training windows, causal histories of rows;
- :mod:`models.learn.train_tower`: tower training, retrieval evaluation, tower checkpoints;
- :mod:`models.learn.retrieval`: Recall@K / NDCG@K;
- :mod:`models.learn.aux_ctr`: the auxiliary CTR task and the ranker fed with LEARN features.
"""

from models.learn.aux_ctr import AuxCTR, LearnRanker, load_ranker
from models.learn.id_two_tower import IDTwoTower
from models.learn.infonce import info_nce
from models.learn.pch_tower import VARIANTS, LearnTower, PCHTower, TwinTower

__all__ = [
    "VARIANTS",
    "AuxCTR",
    "IDTwoTower",
    "LearnRanker",
    "LearnTower",
    "PCHTower",
    "TwinTower",
    "info_nce",
    "load_ranker",
]
