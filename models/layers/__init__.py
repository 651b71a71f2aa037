"""Shared building blocks of the CTR model zoo, each defined once.

Embeddings (``FeatureEmbedding``, the first-order ``LinearTerm``), the ``MLP``, explicit
interactions (FM, inner product, cross networks, CIN), AutoInt's self-attention, FiGNN's graph layers
and FGCNN's feature generation.
"""

from models.layers.attention import MultiHeadSelfAttention
from models.layers.embedding import FeatureEmbedding, LinearTerm
from models.layers.generation import FeatureGeneration
from models.layers.graph import AttentionalReadout, FiGNNBlock, GraphLayer
from models.layers.interaction import CIN, CrossNet, CrossNetV2, FMInteraction, InnerProduct
from models.layers.mlp import MLP

__all__ = [
    "AttentionalReadout",
    "CIN",
    "CrossNet",
    "CrossNetV2",
    "FMInteraction",
    "FeatureEmbedding",
    "FeatureGeneration",
    "FiGNNBlock",
    "GraphLayer",
    "InnerProduct",
    "LinearTerm",
    "MLP",
    "MultiHeadSelfAttention",
]
