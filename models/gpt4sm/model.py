"""GPT4SM for CTR: a student text encoder scores (user, item) pairs; a teacher's embedding helps three ways.

Each row carries text indices into one table of texts (0: the empty text, used as padding): the
candidate ``item``, the user's ``history`` [B, H] (liked training items, 0 = no item) and the user's
``profile``. The student (student.py) encodes the distinct texts of the batch, the tower
(text_tower.py) turns each into a vector; the query vector is the additive-attention pool over the
history items and the profile; the click logit is MLP([q; h_c; q * h_c]).

``strategy`` (one model, one switch):

    vanilla        [c; p] text vectors, BCE only, no teacher anywhere: the control
    eaaf           teacher vector as a feature of every text (needed at inference)
    eaar           [c; p], BCE + reg_weight * 1/2 (mean_query |c - u|^2 + mean_candidate |c - u|^2)
    eaap           [c; p], c first copied from the teacher (copy pre-training), then BCE only
    eaap_copyemb   the copied c as the EaaF feature (no teacher at inference)

u are unit teacher vectors; the query side of the regulariser is every history item and the profile
of the row, the candidate side its item (both sides, unlike the public code's ads variant).
"""

from __future__ import annotations

import torch
from torch import nn

from models.checkpoint import build_record
from models.gpt4sm.additive_attention import AdditiveAttention
from models.gpt4sm.student import Student
from models.gpt4sm.text_tower import TextTower
from models.layers import MLP

STRATEGIES = {"vanilla": "copy", "eaaf": "feature", "eaar": "copy", "eaap": "copy", "eaap_copyemb": "copy_feature"}
PRETRAINED = ("eaap", "eaap_copyemb")  # strategies that start from the copy pre-training checkpoint
TEXT_KEYS = ("item", "history", "profile")
CHUNK = 256  # distinct texts encoded together


def squared_distance(c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """|c - u|^2 per row."""
    return (c - u).pow(2).sum(dim=-1)


def regulariser(distance: torch.Tensor, rows: int, history: torch.Tensor) -> torch.Tensor:
    """1/2 (mean over the query side + mean over the candidate side) of per-text squared distances laid
    out as [candidates (rows), history slots (rows x H), profiles (rows)]; padded slots are left out."""
    candidate = distance[:rows].mean()
    query_mask = torch.cat([history.reshape(-1) > 0, torch.ones(rows, dtype=torch.bool, device=history.device)])
    query = distance[rows:][query_mask].mean()
    return 0.5 * (query + candidate)


class GPT4SM(nn.Module):
    """``forward(batch)`` -> ``logit`` [B] (and ``aux_loss`` for EaaR while training); see the module doc."""

    def __init__(
        self,
        student: Student,
        teacher: torch.Tensor,
        strategy: str = "vanilla",
        dim: int = 128,
        attention_dim: int = 200,
        copy_hidden: int = 768,
        head_units: tuple[int, ...] = (128,),
        reg_weight: float = 0.05,
    ):
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {strategy!r}")
        if teacher.shape[0] != student.states.shape[0]:
            raise ValueError(f"teacher rows ({teacher.shape[0]}) and student texts ({student.states.shape[0]}) differ")
        self.strategy = strategy
        self.student = student
        self.register_buffer("teacher", teacher.float(), persistent=False)
        self.tower = TextTower(
            student.hidden_size, teacher.shape[1], dim, attention_dim, copy_hidden, STRATEGIES[strategy]
        )
        self.user_pool = AdditiveAttention(dim, attention_dim)
        self.head = MLP(3 * dim, list(head_units), output_dim=1)
        self.reg_weight = float(reg_weight) if strategy == "eaar" else 0.0
        hparams = {"strategy": strategy, "dim": dim, "attention_dim": attention_dim, "copy_hidden": copy_hidden,
                   "head_units": list(head_units), "reg_weight": self.reg_weight,
                   "trainable_layers": len(student.layers), "texts": int(teacher.shape[0])}  # fmt: skip
        self.build_config = build_record("gpt4sm", {}, hparams)

    def encode(self, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(distinct, inverse, h, c) of ``texts`` (a flat index tensor): its distinct texts, the index of
        each entry among them, and h and c of each distinct text (entry i's h is ``h[inverse[i]]``).

        Each distinct text is encoded once, in chunks of similar length (each chunk is cut to its
        longest text, so short texts do not pay for the longest one's padding).
        """
        distinct, inverse = torch.unique(texts, return_inverse=True)
        order = torch.argsort(self.student.lengths[distinct], stable=True)
        parts = []
        for chunk in distinct[order].split(CHUNK):
            tokens, mask = self.student(chunk)
            parts.append(self.tower(tokens, mask, self.teacher[chunk]))
        place = torch.argsort(order)  # sorted position of each distinct text
        h = torch.cat([p[0] for p in parts])[place]
        c = None if parts[0][1] is None else torch.cat([p[1] for p in parts])[place]
        return distinct, inverse, h, c

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        item, history, profile = (batch[k] for k in TEXT_KEYS)
        rows, length = history.shape
        texts = torch.cat([item, history.reshape(-1), profile])
        distinct, inverse, h, c = self.encode(texts)
        h = h[inverse]
        candidate = h[:rows]
        members = torch.cat([h[rows : rows + rows * length].view(rows, length, -1), h[-rows:].unsqueeze(1)], dim=1)
        present = torch.cat([history > 0, torch.ones(rows, 1, dtype=torch.bool, device=history.device)], dim=1)
        query = self.user_pool(members, present)
        logit = self.head(torch.cat([query, candidate, query * candidate], dim=-1)).squeeze(-1)
        out = {"logit": logit}
        if self.reg_weight and self.training:
            distance = squared_distance(c, self.teacher[distinct])[inverse]  # per distinct text, then per entry
            out["aux_loss"] = self.reg_weight * regulariser(distance, rows, history)
        return out

    # ------------------------------------------------------------------ copy pre-training (EaaP)
    def copy_loss(self, texts: torch.Tensor) -> torch.Tensor:
        """Mean |c - u|^2 over ``texts``: EaaP's first phase, no label involved."""
        tokens, mask = self.student(texts)
        return squared_distance(self.tower.copied(tokens), self.teacher[texts]).mean()

    def copy_state(self) -> dict[str, torch.Tensor]:
        """The weights c depends on (the student's trainable layers and the copy MLP): what pre-training
        trains and what an EaaP model starts from."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("student.", "tower.copy."))}
