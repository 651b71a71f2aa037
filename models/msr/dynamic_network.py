"""Dynamic Network ("_DN"): scenario-conditioned generated parameters below the backbone.

The baseline enhancement of the LLM4MSR comparison that shares its mechanism but not its knowledge:
a learned scenario embedding (instead of cached LLM states) drives a meta-network
(:class:`models.msr.llm4msr.MetaLayers`) that generates the weights and biases of the layers the
flattened embeddings pass through before the backbone. Rows of a scenario share one generated
network, so the parameters are generated once per scenario in the batch.
"""

from __future__ import annotations

from torch import nn

from models.msr.base import Enhancement
from models.msr.llm4msr import MetaLayers


class DynamicNetwork(Enhancement):
    """x -> generated layers of scenario s (widths ``dims``) -> backbone."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int,
        num_scenarios: int,
        dims: tuple[int, ...] = (64,),
        condition_dim: int = 16,
        meta_hidden: int = 8,
    ):
        super().__init__(vocab_sizes, embedding_dim, num_scenarios)
        self.condition = nn.Embedding(num_scenarios, condition_dim)
        self.layers = MetaLayers(condition_dim, [self.input_dim, *dims], meta_hidden, final_activation=True)
        self.output_dim = self.layers.shapes[-1][1]

    def forward(self, emb, batch, scenario, backbone):
        params = self.layers.generate(self.layers.code(self.condition.weight))
        return backbone(self.layers.by_group(emb.flatten(1), params, scenario), scenario)
