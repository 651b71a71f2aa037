"""FiGNN (Li et al. 2019): fields as nodes of a graph, interactions by gated message passing."""

from __future__ import annotations

from models.ctr.base import CTRModel
from models.layers import AttentionalReadout, FiGNNBlock


class FiGNN(CTRModel):
    """q = the final node states, flattened [B, F*D]; logit = attentional read-out of the nodes."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        dense_dim: int = 0,
        gnn_layers: int = 3,
        use_gru: bool = True,
        use_residual: bool = True,
        reuse_graph_layer: bool = False,
    ):
        super().__init__(vocab_sizes, embedding_dim, dense_dim)
        self.gnn = FiGNNBlock(self.num_fields, embedding_dim, gnn_layers, use_gru, use_residual, reuse_graph_layer)
        self.readout = AttentionalReadout(self.num_fields, embedding_dim)
        self.q_dim = self.num_fields * embedding_dim

    def forward(self, batch):
        h = self.gnn(self.embedding(batch))
        return {"logit": self.readout(h), "q": h.flatten(1)}
