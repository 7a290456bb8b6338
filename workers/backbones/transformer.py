"""A small causal GPT-style character language model around a candidate norm-act.

Every site where a Transformer has a LayerNorm gets a candidate layer
`norm_act(n_embd)` in the tokens layout (B, T, C), and the candidate's
activation comes with it: the norm-act replaces the norm, nothing else.
The MLP keeps its own GELU and attention its softmax, so the search judges
a layer as a Transformer normalizer.

Placements (reference section 6), per block with sublayers f = attention
then MLP:

    pre    x = x + f(norm(x))                    final norm before the head
    post   x = norm(x + f(x))                    no final norm (already normed)
    peri   x = x + norm_out(f(norm_in(x)))       final norm before the head
    mix    post in the first `mix_post_layers` blocks (default a quarter of
           them, at least one), pre in the rest; final norm before the head

A candidate must not let a position see later positions of its sequence;
the primitives' tokens layout guarantees that for every axis set, and
plain LayerNorm-style layers normalize each token alone. (BatchNorm mixes
positions in training mode only; eval mode uses running statistics.)
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workers.backbones.layers import NormActFactory

PLACEMENTS = ("pre", "post", "peri", "mix")


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} must be divisible by n_head {n_head}")
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One Transformer block; placement is "pre", "post" or "peri" (mix is per model)."""

    def __init__(self, n_embd: int, n_head: int, norm_act: NormActFactory, placement: str,
                 dropout: float) -> None:
        super().__init__()
        if placement not in ("pre", "post", "peri"):
            raise ValueError(f"block placement must be pre, post or peri, got {placement!r}")
        self.placement = placement
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.mlp = MLP(n_embd, dropout)
        # pre/peri: the sublayer inputs; post: after each residual add
        self.norm_1 = norm_act(n_embd)
        self.norm_2 = norm_act(n_embd)
        if placement == "peri":
            self.norm_1_out = norm_act(n_embd)
            self.norm_2_out = norm_act(n_embd)

    def forward(self, x: Tensor) -> Tensor:
        if self.placement == "pre":
            x = x + self.attn(self.norm_1(x))
            return x + self.mlp(self.norm_2(x))
        if self.placement == "post":
            x = self.norm_1(x + self.attn(x))
            return self.norm_2(x + self.mlp(x))
        x = x + self.norm_1_out(self.attn(self.norm_1(x)))
        return x + self.norm_2_out(self.mlp(self.norm_2(x)))


class GPT(nn.Module):
    """Character-level causal LM: token + learned position embeddings, blocks, tied head.

    forward(idx: (B, T) int64) -> logits (B, T, vocab_size), T <= block_size.
    """

    layout: ClassVar[str] = "tokens"

    def __init__(self, norm_act: NormActFactory, vocab_size: int, *, block_size: int = 64,
                 n_layer: int = 2, n_head: int = 4, n_embd: int = 64, placement: str = "pre",
                 mix_post_layers: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.block_size = block_size
        self.placement = placement
        if placement == "mix":
            n_post = mix_post_layers if mix_post_layers is not None else max(1, n_layer // 4)
            per_layer = ["post" if i < n_post else "pre" for i in range(n_layer)]
        else:
            per_layer = [placement] * n_layer
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, norm_act, p, dropout) for p in per_layer)
        # A post block ends normalized already; any other block leaves a raw residual stream.
        self.norm_f = norm_act(n_embd) if per_layer and per_layer[-1] != "post" else nn.Identity()
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale the residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * max(1, n_layer)))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.size(1)
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))
