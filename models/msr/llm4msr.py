"""LLM4MSR ("_ours"): hierarchical meta-networks turn cached LLM hidden states into meta layers.

The frozen LLM is never called here: its last-token hidden states of the user-level prompts (one per
user) and scenario-level prompts (one per scenario) were cached offline and live in this module as
buffers (:class:`StateTable`), so they travel inside the checkpoint.

* :class:`MetaLayers`: a meta-network maps a state h to one vector that is cut and reshaped into the
  weights and biases of K layers, e.g. input 128 -> 64 -> 1 needs 128x64 + 64 + 64x1 + 1 values;
  h^(i) = act(h^(i-1) W^(i) + b^(i)), h^(0) = the flattened feature embeddings.
* :class:`LLM4MSR` ("bottom + parallel"): user-level meta layers at the bottom transform the
  embeddings that the backbone then reads; scenario-level meta layers run in parallel on the
  embeddings down to one logit; logit = alpha * scenario_logit + (1 - alpha) * backbone_logit, with
  alpha = sigmoid(a) learnable (starting at ``alpha_init``, by default 0.5: an even blend).

Two departures from the paper's layout are options, tried because on ML-100K with a 135M LLM the
paper's layout loses to the plain backbone: ``bottom="concat"`` lets the backbone read the embeddings
next to the user-level meta layers' output (instead of that output alone), and a small
``alpha_init`` starts the fused logit close to the backbone's. They helped STAR only
(docs/RESULTS_LLM4MSR.md), so the defaults are the paper's.

Serving cost: the generated parameters depend only on the user / the scenario, so in eval mode they
are generated once for every row of the state tables and cached; a forward is then a gather plus
the meta layers' matmuls, next to the backbone's own cost. The cache is dropped whenever the module
changes mode or loads weights.

Cold start: a user without a cached state (no positive training interactions, or unseen) reads the
learned ``default`` vector of the table instead of a state; so does a padding/OOV id.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llm4ctr.errors import DataError, ParamsError
from models.msr.base import Enhancement, route

GROUP_MIN_ROWS = 16  # inference: materialize per-user layers when a batch has this many rows per distinct user


class StateTable(nn.Module):
    """Cached hidden states by row id, centred and scaled; rows without a state -> ``default``.

    Centring (the mean over the rows that have a state, computed in :meth:`load`) removes what all
    prompts share (the template, the instruction) and leaves what tells rows apart. ``scale``
    "dimension" divides each dimension by its own std; "global" divides all by one (the RMS of the
    centred states), which keeps the LLM's own weighting of its dimensions instead of blowing nearly
    constant ones up to unit variance. The learned ``default`` starts at zero, i.e. at the average state.
    """

    SCALES = ("dimension", "global")

    def __init__(self, num_rows: int, dim: int, scale: str = "dimension"):
        super().__init__()
        if scale not in self.SCALES:
            raise ParamsError(f"llm4msr state_scale must be one of {self.SCALES}, got {scale!r}")
        self.scale = scale
        self.register_buffer("states", torch.zeros(num_rows, dim))
        self.register_buffer("known", torch.zeros(num_rows, dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.default = nn.Parameter(torch.zeros(dim))

    def load(self, states: torch.Tensor, known: torch.Tensor | None = None) -> None:
        """Fill the table: ``states`` [num_rows, dim], ``known`` [num_rows] bool (default: all rows)."""
        if tuple(states.shape) != tuple(self.states.shape):
            raise DataError(
                f"LLM states have shape {tuple(states.shape)}, the model expects {tuple(self.states.shape)}"
            )
        known = torch.ones(len(states), dtype=torch.bool) if known is None else known.to(torch.bool)
        if known.shape != self.known.shape:
            raise DataError(f"known-state mask has shape {tuple(known.shape)}, expected {tuple(self.known.shape)}")
        with torch.no_grad():
            self.states.copy_(states)
            self.known.copy_(known)
            rows = self.states[self.known]
            if len(rows):
                mean = rows.mean(dim=0)
                if self.scale == "dimension":
                    std = rows.std(dim=0, unbiased=False)
                else:
                    std = (rows - mean).pow(2).mean().sqrt().expand(rows.shape[1])
                self.mean.copy_(mean)
                self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """[N] row ids -> [N, dim] standardized states (``default`` where a row has none)."""
        normed = (self.states.index_select(0, ids) - self.mean) / self.std
        return torch.where(self.known.index_select(0, ids).unsqueeze(-1), normed, self.default)


class MetaLayers(nn.Module):
    """Layers of widths ``dims`` whose weights and biases a meta-network generates from a condition.

    Meta-network: Linear(cond_dim, meta_hidden) -> ReLU gives a code z; Linear(meta_hidden,
    num_params) turns z into the one flat vector that is cut and reshaped layer by layer into
    W [in, out] then b [out] (:meth:`generate`, :meth:`unpack`). (ours) That last Linear's bias starts
    as an ordinary layer initialization (uniform +-1/sqrt(in) weights, zero biases) and its weight
    with std 1/sqrt(in * meta_hidden), so every condition starts with a usable layer of comparable
    scale and the condition shifts it from there. ``final_activation`` False leaves the last layer
    linear (a logit).

    Rows with their own condition (users) never get their weights materialized: since the generated
    vector is linear in z, h W(z) = sum_j z~_j (h A_j) with z~ = [1, z] and A_j the matching slices
    of that Linear's bias and weight, i.e. ONE matmul of h with a stacked [in, out * (1 + meta_hidden)]
    matrix and a contraction with z~ (:meth:`forward`). Gathering a [in, out] matrix per row instead
    costs far more on a CPU (memory traffic), and the meta-network's width ``meta_hidden`` is what
    bounds the extra cost. Rows that share a condition (a scenario) use :meth:`by_group`.
    """

    def __init__(self, cond_dim: int, dims: list[int], meta_hidden: int = 8, final_activation: bool = True):
        super().__init__()
        if len(dims) < 2 or min(dims) < 1 or meta_hidden < 1:
            raise ParamsError(
                f"meta layers need an input and an output width and meta_hidden >= 1, all positive; "
                f"got dims {dims}, meta_hidden {meta_hidden}"
            )
        self.shapes = list(zip(dims[:-1], dims[1:]))
        self.num_params = sum(n_in * n_out + n_out for n_in, n_out in self.shapes)
        self.final_activation = final_activation
        self.meta = nn.Sequential(nn.Linear(cond_dim, meta_hidden), nn.ReLU())
        self.head = nn.Linear(meta_hidden, self.num_params)
        with torch.no_grad():
            for (n_in, n_out), (start, stop) in zip(self.shapes, self._spans()):
                self.head.weight[start:stop].normal_(0, 1 / math.sqrt(n_in * meta_hidden))
                self.head.bias[start : start + n_in * n_out].uniform_(-1 / math.sqrt(n_in), 1 / math.sqrt(n_in))
                self.head.bias[start + n_in * n_out : stop].zero_()

    def _spans(self) -> list[tuple[int, int]]:
        """(start, stop) of each layer's W-then-b block in the flat parameter vector."""
        spans, offset = [], 0
        for n_in, n_out in self.shapes:
            spans.append((offset, offset + n_in * n_out + n_out))
            offset += n_in * n_out + n_out
        return spans

    def code(self, conditions: torch.Tensor) -> torch.Tensor:
        """[G, cond_dim] -> [G, meta_hidden]: the meta-network's hidden code z of each condition."""
        return self.meta(conditions)

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """[G, meta_hidden] -> [G, num_params]: the flat parameter vector of each code."""
        return self.head(codes)

    def unpack(self, params: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views (W [..., in, out], b [..., out]) of each layer in ``params`` [..., num_params]."""
        return [
            (
                params[..., start : start + n_in * n_out].unflatten(-1, (n_in, n_out)),
                params[..., start + n_in * n_out : stop],
            )
            for (n_in, n_out), (start, stop) in zip(self.shapes, self._spans())
        ]

    def _activate(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if self.final_activation or i < len(self.shapes) - 1 else x

    def stacked(self) -> torch.Tensor:
        """[num_params, 1 + meta_hidden]: the head's bias and weight side by side (the A_j of the class doc)."""
        return torch.cat([self.head.bias.unsqueeze(1), self.head.weight], dim=1)

    def forward(self, x: torch.Tensor, codes: torch.Tensor, stacked: torch.Tensor | None = None) -> torch.Tensor:
        """Run the layers generated from each row's code: x [B, in], codes [B, meta_hidden] -> [B, out];
        ``stacked``: :meth:`stacked`, when the caller keeps it (it is constant at inference)."""
        ones = codes.new_ones(len(codes), 1)
        z = torch.cat([ones, codes], dim=1).unsqueeze(1)  # [B, 1, 1 + H]: z~ = [1, z]
        stacked = self.stacked() if stacked is None else stacked  # [P, 1 + H]
        for i, ((n_in, n_out), (start, stop)) in enumerate(zip(self.shapes, self._spans())):
            weights = stacked[start : start + n_in * n_out].reshape(n_in, n_out * z.shape[-1])
            h = (x @ weights).view(len(x), n_out, -1)
            x = self._activate(i, (h * z).sum(-1) + z.squeeze(1) @ stacked[start + n_in * n_out : stop].T)
        return x

    def by_group(self, x: torch.Tensor, params: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Rows of group g run the layers of ``params[g]`` ([G, num_params]); one matmul per group present."""
        return route(lambda g, rows: self.run(rows, params[g]), groups, x)

    def run(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The layers of one parameter vector [num_params] on every row of ``x``."""
        for i, (w, b) in enumerate(self.unpack(params)):
            x = self._activate(i, x @ w + b)
        return x


class LLM4MSR(Enhancement):
    """User-level meta layers below the backbone, scenario-level meta layers beside it, alpha-fused.

    ``user_dims``: widths of the user-level meta layers after the input (the last is the backbone's
    input width); ``scenario_dims``: hidden widths of the scenario-level meta layers (a final width-1
    layer gives the logit); ``llm_dim``: the LLM's hidden size (SmolLM2-135M: 576); ``meta_hidden``:
    the meta-networks' hidden width; ``bottom``: "replace" (the backbone reads the user-level meta
    layers' output, the paper) or "concat" (it reads [embeddings, that output]); ``alpha_init``: the
    starting weight of the scenario-level logit; ``state_scale``: see :class:`StateTable`.
    """

    BOTTOMS = ("replace", "concat")

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int,
        num_scenarios: int,
        llm_dim: int = 576,
        user_dims: tuple[int, ...] = (64,),
        scenario_dims: tuple[int, ...] = (64,),
        meta_hidden: int = 8,
        user_field: str = "user_id",
        bottom: str = "replace",
        alpha_init: float = 0.5,
        state_scale: str = "dimension",
    ):
        super().__init__(vocab_sizes, embedding_dim, num_scenarios)
        if user_field not in vocab_sizes:
            raise ParamsError(f"llm4msr user_field '{user_field}' is not a feature field (fields: {list(vocab_sizes)})")
        if bottom not in self.BOTTOMS or not 0 < alpha_init < 1:
            raise ParamsError(
                f"llm4msr bottom must be one of {self.BOTTOMS} and 0 < alpha_init < 1; "
                f"got bottom {bottom!r}, alpha_init {alpha_init}"
            )
        self.user_field = user_field
        self.bottom = bottom
        self.users = StateTable(vocab_sizes[user_field], llm_dim, state_scale)
        self.scenarios = StateTable(num_scenarios, llm_dim, state_scale)
        self.user_layers = MetaLayers(llm_dim, [self.input_dim, *user_dims], meta_hidden, final_activation=True)
        self.scenario_layers = MetaLayers(
            llm_dim, [self.input_dim, *scenario_dims, 1], meta_hidden, final_activation=False
        )
        self.alpha_logit = nn.Parameter(torch.logit(torch.tensor(float(alpha_init))))
        self.output_dim = self.user_layers.shapes[-1][1] + (self.input_dim if bottom == "concat" else 0)
        self._cache: dict[str, torch.Tensor] = {}
        self.register_load_state_dict_post_hook(lambda module, keys: module._cache.clear())

    def set_llm_states(
        self, user_states: torch.Tensor, user_known: torch.Tensor, scenario_states: torch.Tensor
    ) -> None:
        """Load the cached states: users by encoded user id ([vocab, llm_dim] + mask), scenarios by index."""
        self.users.load(user_states, user_known)
        self.scenarios.load(scenario_states)
        self._cache.clear()

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    @property
    def alpha(self) -> torch.Tensor:
        """The weight of the scenario-level logit in the fused logit."""
        return torch.sigmoid(self.alpha_logit)

    def _user_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """[B] user ids -> [B, meta_hidden]: codes of the batch's distinct users (train) or of all (eval, cached)."""
        if self.training:
            unique, inverse = torch.unique(ids, return_inverse=True)
            return self.user_layers.code(self.users(unique)).index_select(0, inverse)
        if "users" not in self._cache:
            self._cache["users"] = self.user_layers.code(
                self.users(torch.arange(len(self.users.states), device=ids.device))
            )
        return self._cache["users"].index_select(0, ids)

    def _scenario_params(self, device: torch.device) -> torch.Tensor:
        """[S, num_params]: the scenario-level meta layers of every scenario (cached in eval)."""
        if self.training or "scenarios" not in self._cache:
            layers = self.scenario_layers
            params = layers.generate(layers.code(self.scenarios(torch.arange(self.num_scenarios, device=device))))
            if self.training:
                return params
            self._cache["scenarios"] = params
        return self._cache["scenarios"]

    def _bottom(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The user-level meta layers on ``x`` for users ``ids``.

        At inference, a batch with many rows per distinct user (a serving request scores many
        candidates for one user) materializes each user's layers once and runs plain matmuls; any
        other batch takes the per-row path of :meth:`MetaLayers.forward`. Both compute the same values.
        """
        if self.training:
            return self.user_layers(x, self._user_codes(ids))
        if len(ids) == 1:  # a one-row request: this user's layers, materialized
            return self.user_layers.run(x, self.user_layers.generate(self._user_codes(ids))[0])
        if len(ids) >= GROUP_MIN_ROWS:
            unique, inverse = torch.unique(ids, return_inverse=True)
            if len(unique) * GROUP_MIN_ROWS <= len(ids):
                layers = self.user_layers
                return layers.by_group(x, layers.generate(self._user_codes(unique)), inverse)
        if "stacked" not in self._cache:
            self._cache["stacked"] = self.user_layers.stacked()
        return self.user_layers(x, self._user_codes(ids), self._cache["stacked"])

    def forward(self, emb, batch, scenario, backbone):
        x = emb.flatten(1)
        bottom = self._bottom(x, batch[self.user_field])
        if self.bottom == "concat":
            bottom = torch.cat([x, bottom], dim=1)
        parallel = self.scenario_layers.by_group(x, self._scenario_params(x.device), scenario).squeeze(-1)
        alpha = self.alpha
        return alpha * parallel + (1 - alpha) * backbone(bottom, scenario)
