"""A GPT decoder in one file, and the ladder of sizes a study's trials map onto.

Deliberately plain (nanoGPT-shaped): a study compares data mixtures, so the model should be
an unremarkable, well-understood baseline whose only moving part is the data. Pre-LayerNorm
blocks, learned absolute positions, GELU MLP, tied input/output embeddings, no biases and
no dropout: the GPT-2/3 recipe minus the parts that do not matter for single-epoch
pretraining.

Shapes in comments: B batch, T sequence length, C ``n_embd``, nh heads, hs head size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GPTConfig", "GPT", "PRESETS", "count_params", "preset_for_size"]


@dataclass(frozen=True)
class GPTConfig:
    # Filled in from the data (``meta.json``) when a trial starts: the presets describe a
    # shape, not a tokenizer. 257 = 256 bytes + an end-of-document token, the default
    # byte-level tokenizer of ``workers.trainer.data``.
    vocab_size: int = 257
    # Longest sequence the position table covers. The trainer sets it to its ``seq_len``,
    # so a model never carries position rows it is not trained on.
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    # Single-epoch pretraining sees each token about once: dropout only slows learning.
    dropout: float = 0.0
    # Biases in Linear/LayerNorm add parameters and no quality (nanoGPT's finding), and
    # without them the non-embedding count is exactly 12 * L * C^2 + (2L + 1) * C.
    bias: bool = False

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (``nn.LayerNorm`` cannot drop only the bias)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # Query, key and value for all heads in one matmul.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        # Fused (flash) attention where the device has it; the causal mask is implicit.
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN residual block: normalising the branch inputs, not the stream, is what lets
    deep stacks train without careful warmup tuning."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): one matrix both reads and writes tokens, which
        # saves vocab * C parameters and helps small models most.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual branches' output projections by 1/sqrt(2L) so the
        # residual stream's variance does not grow with depth at initialisation.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters of the built module; the same number :func:`count_params` derives from
        the config alone (tests hold the two together)."""
        n = sum(p.numel() for p in self.parameters())  # tied weights are counted once
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and the mean next-token cross-entropy in nats when ``targets`` is given
        (the unit every reported loss uses)."""
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size "
                             f"{self.config.block_size}")
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over B
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, vocab)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


def count_params(config: GPTConfig, non_embedding: bool = True) -> int:
    """Parameter count from the config alone, so picking a 1.3B preset never allocates it.

    ``non_embedding`` (the default) leaves out the token and position tables. That is the
    count scaling laws are fitted on (Kaplan et al. 2020's N) and, unlike the total, it does
    not depend on the tokenizer: a byte-level and a 50k-BPE run of the same preset are the
    same model size to a study.
    """
    C, L = config.n_embd, config.n_layer
    per_block = 12 * C * C + 2 * C  # attn 4C^2 + MLP 8C^2, two LayerNorm weights
    if config.bias:
        per_block += 3 * C + C + 4 * C + C + 2 * C  # c_attn, c_proj, c_fc, c_proj, LN biases
    n = L * per_block + C * (2 if config.bias else 1)  # + final LayerNorm
    if not non_embedding:
        n += config.vocab_size * C + config.block_size * C  # tied wte/lm_head, wpe
    return n


# The size ladder: tiny/mini run the real trainer on a CPU (tests, laptops); the rest have
# head size 64-128, the last four GPT-3 Small/Medium/Large/XL (Brown et al. 2020, Table
# 2.1; XL with 16 heads of 128 as GPT-Neo 1.3B, since the table's 24 heads do not divide
# 2048). Names give the conventional size (total, 50k vocabulary); comments give the
# non-embedding count the ladder is matched on.
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(n_layer=2, n_head=4, n_embd=64),  # 0.1M
    "mini": GPTConfig(n_layer=4, n_head=6, n_embd=192),  # 1.8M
    "6m": GPTConfig(n_layer=8, n_head=4, n_embd=256),  # 6.3M
    "20m": GPTConfig(n_layer=12, n_head=6, n_embd=384),  # 21M
    "60m": GPTConfig(n_layer=12, n_head=10, n_embd=640),  # 59M
    "125m": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # 85M
    "350m": GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # 302M
    "760m": GPTConfig(n_layer=24, n_head=16, n_embd=1536),  # 680M
    "1.3b": GPTConfig(n_layer=24, n_head=16, n_embd=2048),  # 1.2B
}


def preset_for_size(model_size: float) -> tuple[str, GPTConfig]:
    """The preset whose NON-embedding parameter count is nearest ``model_size`` in log space.

    Log distance because a study's ladder is geometric (20M, 60M, 180M...): 40M should be
    as far from 20M as 80M is. Non-embedding because that is the tokenizer-independent
    count (see :func:`count_params`). Sizes beyond either end map to the end presets; the
    mapping is monotone in ``model_size``.
    """
    if not model_size > 0:
        raise ValueError(f"model_size must be > 0, got {model_size}")
    target = math.log(model_size)
    name = min(PRESETS, key=lambda k: abs(math.log(count_params(PRESETS[k])) - target))
    return name, replace(PRESETS[name])
