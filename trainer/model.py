"""The HSC-MAE networks: per modality a masking token, an encoder, two heads and a decoder.

The model returns representations only; the losses live in `losses.py` (CLIP's habit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import TrainConfig


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.LayerNorm(hidden),
        nn.GELU(), nn.Linear(hidden, d_out),
    )  # fmt: skip


@dataclass
class BranchOut:
    e: Tensor  # (B, embed_dim) encoder output
    z: Tensor  # (B, proj_dim) contrastive head
    h: Tensor  # (B, cca_dim) CCA head
    recon: Tensor | None  # (B, D) or (B, T, D); only when decode=True


class Branch(nn.Module):
    """One modality. Vector inputs (B, D): element-wise masking with a learned per-dimension mask value, MLP encoder
    and decoder. Sequence inputs (B, T, D): whole time steps replaced by a learned mask vector, a small
    transformer over steps, mean-pooled embedding; the decoder reconstructs each step from its token.
    """

    def __init__(self, in_dim: int, seq_len: int, cfg: TrainConfig):
        super().__init__()
        self.seq = seq_len > 0
        h = cfg.hidden_dim
        self.mask_value = nn.Parameter(torch.zeros(in_dim))  # (D,) learned fill for masked entries / steps
        if self.seq:
            self.embed_in = nn.Linear(in_dim, h)
            self.pos = nn.Parameter(torch.zeros(1, seq_len, h))
            nn.init.trunc_normal_(self.pos, std=0.02)
            layer = nn.TransformerEncoderLayer(h, nhead=4 if h % 4 == 0 else 1, dim_feedforward=2 * h,
                                               dropout=0.0, batch_first=True, norm_first=True)  # fmt: skip
            self.mixer = nn.TransformerEncoder(layer, cfg.seq_layers, enable_nested_tensor=False)
            self.pool = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, cfg.embed_dim))
            self.decoder = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, in_dim))
        else:
            self.encoder = _mlp(in_dim, h, cfg.embed_dim)
            self.decoder = nn.Sequential(nn.Linear(cfg.embed_dim, h), nn.GELU(), nn.Linear(h, in_dim))
        self.head_z = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.GELU(),
                                    nn.Linear(cfg.embed_dim, cfg.proj_dim))  # fmt: skip
        self.head_h = nn.Linear(cfg.embed_dim, cfg.cca_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, decode: bool = False) -> BranchOut:
        """x: (B, D) or (B, T, D); mask: same as x (vectors) or (B, T) (sequences), True = masked."""
        if mask is not None:
            m = mask.unsqueeze(-1) if self.seq else mask
            x = torch.where(m, self.mask_value.to(x.dtype), x)
        if self.seq:
            tokens = self.mixer(self.embed_in(x) + self.pos[:, : x.shape[1]])  # (B, T, H)
            e = self.pool(tokens.mean(1))
            recon = self.decoder(tokens) if decode else None
        else:
            e = self.encoder(x)
            recon = self.decoder(e) if decode else None
        return BranchOut(e=e, z=self.head_z(e), h=self.head_h(e), recon=recon)


class HSCMAE(nn.Module):
    """Audio and visual branches. The teacher is an EMA copy of this whole module (see `ema.py`)."""

    def __init__(self, audio_shape: tuple[int, ...], visual_shape: tuple[int, ...], cfg: TrainConfig):
        """audio_shape / visual_shape: per-clip feature shape, (D,) or (T, D)."""
        super().__init__()
        self.audio = Branch(audio_shape[-1], audio_shape[0] if len(audio_shape) == 2 else 0, cfg)
        self.visual = Branch(visual_shape[-1], visual_shape[0] if len(visual_shape) == 2 else 0, cfg)

    def forward(self, xa: Tensor, xv: Tensor, mask_a: Tensor | None = None, mask_v: Tensor | None = None,
                decode: bool = False) -> tuple[BranchOut, BranchOut]:  # fmt: skip
        return self.audio(xa, mask_a, decode), self.visual(xv, mask_v, decode)


def random_mask(x: Tensor, ratio: float, generator: torch.Generator) -> Tensor:
    """Bernoulli(ratio) mask: (B, D) entries for vectors (B, D), (B, T) steps for sequences (B, T, D)."""
    shape = x.shape if x.dim() == 2 else x.shape[:2]
    return torch.rand(shape, generator=generator, device=x.device) < ratio
