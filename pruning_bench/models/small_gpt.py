"""A small causal transformer language model, after Karpathy's nanoGPT (github.com/karpathy/nanoGPT,
``model.py``; GPT-2, Radford et al. 2019): token + learned position embeddings, ``n_layer`` pre-LayerNorm
blocks of causal self-attention (separate q/k/v/out ``nn.Linear``) and a GELU MLP (two ``nn.Linear``,
4x wide), a final LayerNorm and an ``nn.Linear`` head.

Differences from nanoGPT: no dropout, and no weight tying, so the head is an ordinary prunable Linear like
every other projection (tying would make pruning the head prune the input embedding too). Input: token ids
(B, T) int64 with T <= ``block_size``; output: logits (B, T, vocab). A float input (the harness's zero
probes of shape ``input_shape``) is cast to token ids, so generic probes work too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, written out as matmuls (nanoGPT's non-flash path): on the CPU
    ``torch.utils.flop_counter`` does not count ``F.scaled_dot_product_attention`` (torch 2.x), these it does."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(n_embd, n_embd)
        self.k = nn.Linear(n_embd, n_embd)
        self.v = nn.Linear(n_embd, n_embd)
        self.out = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (proj(x).view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        y = att.masked_fill(~causal, float("-inf")).softmax(dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class SmallGPT(nn.Module):
    """nanoGPT-style decoder-only transformer (see the module docstring)."""

    def __init__(self, vocab: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab)
        gpt_init(self, n_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = x if not x.is_floating_point() else x.long()
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than block_size {self.block_size}")
        h = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def gpt_init(model: nn.Module, n_layer: int) -> None:
    """nanoGPT's initialisation: N(0, 0.02) weights and embeddings, zero biases, and the residual
    projections (attention out, MLP proj) at 0.02 / sqrt(2 n_layer) (GPT-2)."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.out", ".proj")) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def small_gpt(*, num_classes: int, input_shape: tuple[int, ...], n_layer: int = 2, n_head: int = 4,
              n_embd: int = 64, block_size: int = 0) -> SmallGPT:
    """Build the small GPT for token windows of shape (T,) over a vocabulary of ``num_classes`` tokens;
    ``block_size`` 0 means T."""
    if len(input_shape) != 1:
        raise ValueError(f"small_gpt takes token windows (T,); got input_shape {tuple(input_shape)}")
    for key, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    block_size = block_size or input_shape[0]
    if block_size < input_shape[0]:
        raise ValueError(f"block_size {block_size} is shorter than the data's windows ({input_shape[0]})")
    return SmallGPT(num_classes, block_size, n_layer, n_head, n_embd)
