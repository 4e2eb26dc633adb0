"""Released self-supervised ViTs (DINO, DINOv2 with registers / SwiGLU, DINOv3 with RoPE and
storage tokens, MoCo v3, I-JEPA, the MAE encoder, and their Hugging Face copies) on timm
modules, computing what the official code computes.

The blocks, norms, patch embedding and RoPE are timm's (``VisionTransformer`` / ``Eva``); the
token assembly is ours because the references differ exactly there: where registers sit
relative to the position embedding, how the position embedding is interpolated at another
input size (DINO's ``+0.1`` scale factor, the register models' antialiased ``size=``), the
mask token, and RoPE only on patch tokens. Every output keeps prefix tokens (cls, registers,
storage) apart from the patch grid: :meth:`PretrainedViT.block_tokens` is the one place that
splits them, and the attention maps, ``mean`` pooling and dense patch grids all go through it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Mlp, SwiGLU, SwiGLUPacked
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from selfsup_vis.checkpoints.formats import family_keymaps, load_pretrained
from selfsup_vis.checkpoints.formats.hf import arch_from_hf, offline_error
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.checkpoints.loading import LoadReport
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.model import PretrainedViTConfig
from selfsup_vis.config.model_modern import FAMILY_DEFAULTS
from selfsup_vis.models.base import NOT_HPARAMS, SSLModule
from selfsup_vis.models.vit_attention import explicit_attention_probs

log = logging.getLogger(__name__)

#: families whose ViT is a timm ``Eva`` with RoPE (no absolute position embedding)
ROPE_FAMILIES = ("dinov3",)


@dataclass
class Tokens:
    """One block's tokens split once: ``prefix`` (B, P, C) = [cls?, registers / storage],
    ``patches`` (B, h*w, C) row-major, ``grid`` (h, w)."""

    prefix: torch.Tensor
    patches: torch.Tensor
    grid: tuple[int, int]
    has_cls: bool
    num_registers: int

    @property
    def cls(self) -> torch.Tensor | None:
        return self.prefix[:, 0] if self.has_cls else None

    @property
    def registers(self) -> torch.Tensor:
        start = 1 if self.has_cls else 0
        return self.prefix[:, start:start + self.num_registers]

    def patch_grid(self) -> torch.Tensor:
        """(B, C, h, w): the patch tokens only, never a prefix token."""
        b, n, c = self.patches.shape
        h, w = self.grid
        return self.patches.transpose(1, 2).reshape(b, c, h, w)


def interpolate_pos_embed(pos: torch.Tensor, n_prefix: int, grid: tuple[int, int],
                          image_square: bool, offset: float, antialias: bool) -> torch.Tensor:
    """The position embedding for a ``grid`` of patches, as the official DINO / DINOv2 code
    computes it: the stored table when the patch count matches and the image is square,
    otherwise bicubic ``F.interpolate`` of the patch part in float32 with
    ``scale_factor=((h + offset)/M, (w + offset)/M)`` when ``offset`` (DINO, DINOv2), else
    ``size=(h, w)`` (DINOv2 register models with ``antialias=True``; Hugging Face Dinov2Model
    without). ``n_prefix`` rows (the cls row) pass through."""
    h, w = grid
    n = pos.shape[1] - n_prefix
    if n == h * w and image_square:
        return pos
    m = int(math.sqrt(n))
    if m * m != n:
        raise ValueError(f"position embedding with {n} patch rows is not a square grid")
    dim = pos.shape[-1]
    patch = pos[:, n_prefix:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    kw: dict[str, Any] = ({"scale_factor": ((h + offset) / m, (w + offset) / m)} if offset
                          else {"size": (h, w)})
    patch = F.interpolate(patch, mode="bicubic", antialias=antialias, align_corners=False, **kw)
    if tuple(patch.shape[-2:]) != (h, w):
        raise ValueError(f"interpolated position grid {tuple(patch.shape[-2:])} != patch grid {(h, w)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos.dtype)
    return torch.cat([pos[:, :n_prefix], patch], dim=1)


@takes_schema(PretrainedViTConfig)
class PretrainedViT(SSLModule):
    """Feature extractor for a released self-supervised ViT; ``release`` (dino, dinov2,
    dinov3, mocov3, ijepa, mae) is its ``family`` (the checkpoint formats it accepts). ``checkpoint`` is a file or a Hugging Face ``save_pretrained``
    folder; its format is detected (:mod:`selfsup_vis.checkpoints.formats`) and must belong to
    that family. With ``path`` (a Hugging Face folder) the architecture comes from its
    ``config.json`` and the family from its ``model_type``."""

    def __init__(self, *, release: str, img_size: int, patch_size: int, embed_dim: int,
                 depth: int, num_heads: int, mlp_hidden: int | None, ffn_layer: str,
                 num_register_tokens: int, class_token: bool, layerscale: float | None,
                 norm_eps: float, qkv_bias: bool, interpolate_offset: float,
                 interpolate_antialias: bool, mask_token: bool, rope_base: float,
                 checkpoint_key: str, path: str | None, pretrained: bool, hf_layout: bool,
                 **common: Any) -> None:
        family = release
        if path:  # Hugging Face folder or Hub id: architecture from its config.json
            arch = arch_from_hf(path)
            family, img_size, patch_size = arch["family"], arch["img_size"], arch["patch_size"]
            embed_dim, depth, num_heads = arch["embed_dim"], arch["depth"], arch["num_heads"]
            mlp_hidden, ffn_layer = arch["mlp_hidden"], arch["ffn_layer"]
            num_register_tokens, layerscale = arch["num_register_tokens"], arch["layerscale"]
            norm_eps, interpolate_offset = arch["norm_eps"], arch["interpolate_offset"]
            interpolate_antialias, mask_token = arch["interpolate_antialias"], arch["mask_token"]
            rope_base, hf_layout = arch["rope_base"], True
            common["checkpoint"] = common.get("checkpoint") or arch["folder"]
        if pretrained and not common.get("checkpoint"):
            raise offline_error(f"model.pretrained=true ({common.get('name', family)})")
        if family not in FAMILY_DEFAULTS:
            raise ValueError(f"model.release={family!r}: valid releases {', '.join(FAMILY_DEFAULTS)}")
        if img_size % patch_size:
            raise ValueError(f"model.img_size={img_size} is not a multiple of model.patch_size={patch_size}")
        super().__init__(img_size=img_size, **common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        self.release = family
        self.patch_size = int(patch_size)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.class_token = bool(class_token)
        self.num_register_tokens = int(num_register_tokens)
        self.interpolate_offset = float(interpolate_offset)
        self.interpolate_antialias = bool(interpolate_antialias)
        self.checkpoint_key = checkpoint_key
        self.hf_layout = bool(hf_layout)
        hidden = int(mlp_hidden) if mlp_hidden else 4 * embed_dim
        norm = partial(nn.LayerNorm, eps=float(norm_eps))
        self.rope = family in ROPE_FAMILIES
        if self.rope:
            self.encoder = Eva(
                img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                num_heads=num_heads, qkv_bias=qkv_bias, qkv_fused=not hf_layout, mlp_ratio=4.0,
                init_values=layerscale, use_abs_pos_emb=False, use_rot_pos_emb=True,
                rope_type="dinov3", rope_temperature=rope_base, rope_rotate_half=True,
                num_reg_tokens=num_register_tokens, norm_layer=norm, dynamic_img_size=True,
                num_classes=0, global_pool="token", use_fc_norm=False)
            for blk in self.encoder.blocks:  # the reference's exact hidden width
                blk.mlp = (SwiGLU(embed_dim, hidden) if ffn_layer == "swiglu"
                           else Mlp(embed_dim, hidden))
            self.register_tokens = None
        else:
            swiglu = ffn_layer == "swiglu"
            self.encoder = VisionTransformer(
                img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                num_heads=num_heads, mlp_ratio=((2 * hidden if swiglu else hidden) + 0.5) / embed_dim,
                qkv_bias=qkv_bias, init_values=layerscale, class_token=class_token,
                global_pool="token" if class_token else "avg", fc_norm=False, num_classes=0,
                norm_layer=norm,
                mlp_layer=SwiGLUPacked if swiglu else Mlp, dynamic_img_size=True,
                act_layer=nn.SiLU if swiglu else nn.GELU)  # the Block passes act_layer to the MLP
            self.register_tokens = (nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
                                    if num_register_tokens else None)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim)) if mask_token else None
        self.num_prefix_tokens = int(class_token) + self.num_register_tokens
        self.token_layers = frozenset([*(f"block{i}" for i in range(depth)), "norm"])
        self.configure_features()

    # ------------------------------------------------------------------------------ tokens
    @property
    def depth(self) -> int:
        return len(self.encoder.blocks)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def embed(self, images: torch.Tensor, masks: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """Input tokens of block 0 [cls?, registers/storage, patches], the patch grid and the
        RoPE table (None for absolute position embeddings). ``masks`` (B, h*w) bool replaces
        patch tokens by ``mask_token`` before any position information (DINOv2 / DINOv3)."""
        enc = self.encoder
        H, W = images.shape[-2:]
        x = enc.patch_embed(images)  # (B, h, w, C): dynamic_img_size
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        if masks is not None:
            if self.mask_token is None:
                raise ValueError(f"{self.release} model '{self.model_name}' has no mask_token")
            x = torch.where(masks.reshape(b, -1, 1).bool(), self.mask_token.to(x.dtype).unsqueeze(0), x)
        if self.rope:
            cls = enc.cls_token
            if masks is None and self.mask_token is not None:
                cls = cls + 0 * self.mask_token  # what the reference adds (keeps the graph)
            parts = [cls.expand(b, -1, -1)]
            if enc.reg_token is not None:
                parts.append(enc.reg_token.expand(b, -1, -1))
            x = torch.cat([*parts, x], dim=1)
            return x, (h, w), enc.rope.get_embed(shape=[h, w])
        if self.class_token:
            x = torch.cat([enc.cls_token.expand(b, -1, -1), x], dim=1)
        pos = interpolate_pos_embed(enc.pos_embed, int(self.class_token), (h, w), H == W,
                                    self.interpolate_offset, self.interpolate_antialias)
        x = x + pos
        if self.register_tokens is not None:  # after the position embedding: they carry none
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        return x, (h, w), None

    def run_blocks(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                   keep: Sequence[int] = (), attn_of: Sequence[int] = ()
                   ) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[int, torch.Tensor], tuple[int, int]]:
        """Last block output (before the final norm), raw outputs of blocks ``keep``, explicit
        softmax attention probabilities (B, heads, T, T) of blocks ``attn_of`` and the grid."""
        x, grid, rope = self.embed(images, masks)
        outs: dict[int, torch.Tensor] = {}
        probs: dict[int, torch.Tensor] = {}
        want_out, want_attn = set(keep), set(attn_of)
        for i, blk in enumerate(self.encoder.blocks):
            if i in want_attn:
                probs[i] = explicit_attention_probs(blk.attn, blk.norm1(x), rope=rope)
            x = blk(x, rope=rope) if self.rope else blk(x)
            if i in want_out:
                outs[i] = x
        return x, outs, probs, grid

    def split(self, x: torch.Tensor, grid: tuple[int, int]) -> Tokens:
        n = self.num_prefix_tokens
        if x.shape[1] != n + grid[0] * grid[1]:
            raise RuntimeError(f"{x.shape[1]} tokens for {n} prefix tokens and a {grid} grid")
        return Tokens(x[:, :n], x[:, n:], grid, self.class_token, self.num_register_tokens)

    def block_tokens(self, images: torch.Tensor, block: int | str = -1, norm: bool = True,
                     masks: torch.Tensor | None = None) -> Tokens:
        """Prefix tokens (cls / registers / storage) and the patch tokens of ``block`` (index,
        negative from the end, or "norm" = last block) split apart; ``norm`` applies the final
        norm as DINO / DINOv2 ``get_intermediate_layers(norm=True)`` do. ``.patch_grid()`` is
        the (B, C, h, w) map for dense tasks; it never contains a register."""
        idx = self.depth - 1 if block in ("norm", -1) else int(block) % self.depth
        last, outs, _, grid = self.run_blocks(images, masks, keep=[idx])
        x = outs[idx]
        if norm:
            x = self.encoder.norm(x)
        return self.split(x, grid)

    def forward_features(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """All tokens after the final norm (B, prefix + h*w, C)."""
        x, _, _, _ = self.run_blocks(images, masks)
        return self.encoder.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_features(images)
        return tokens[:, 0] if self.class_token else tokens.mean(1)

    def intermediate_layers(self, images: torch.Tensor, n: int | Sequence[int] = 1,
                            norm: bool = True) -> list[Tokens]:
        """The last ``n`` blocks (or the blocks listed), split, the way DINO / DINOv2 / DINOv3
        ``get_intermediate_layers`` select them."""
        idx = list(range(self.depth - n, self.depth)) if isinstance(n, int) else list(n)
        _, outs, _, grid = self.run_blocks(images, keep=idx)
        return [self.split(self.encoder.norm(outs[i]) if norm else outs[i], grid) for i in idx]

    def attention_probs(self, images: torch.Tensor, blocks: Sequence[int] = (-1,)
                        ) -> tuple[dict[int, torch.Tensor], tuple[int, int]]:
        """softmax(q kᵀ · scale) (B, heads, T, T) of ``blocks``, computed explicitly from each
        block's own modules (RoPE included), independent of timm's fused attention."""
        idx = [b % self.depth for b in blocks]
        _, _, probs, grid = self.run_blocks(images, attn_of=idx)
        return probs, grid

    # ------------------------------------------------------------------------------ layers
    def final_norm_layer(self) -> nn.Module | None:
        return self.encoder.norm

    def available_layers(self) -> list[str]:
        return [f"block{i}" for i in range(self.depth)] + ["norm"]

    def valid_poolings(self) -> tuple[str, ...]:
        base = ("cls", "mean", "cls+mean", "gap") if self.class_token else ("mean", "gap")
        return base + (("reg",) if self.num_register_tokens else ())

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        keep = [int(name[5:]) for name in layers if name.startswith("block")]
        last, outs, _, _ = self.run_blocks(images, keep=keep)
        res = {f"block{i}": outs[i] for i in keep}
        if "norm" in layers:
            res["norm"] = self.encoder.norm(last)
        return res

    def _pool(self, x: torch.Tensor, base: str, pool: str | None) -> torch.Tensor:
        """cls, mean (patch tokens only), reg (mean of the registers / storage tokens),
        cls+mean; a prefix token never enters the patch mean."""
        pool = pool or self.pooling or ("cls" if self.class_token else "mean")
        n = self.num_prefix_tokens
        patches = x[:, n:].mean(dim=1)
        if pool in ("mean", "gap"):
            return patches
        if pool == "reg":
            if not self.num_register_tokens:
                raise ValueError(f"pooling 'reg': '{self.model_name}' has no register tokens")
            start = int(self.class_token)
            return x[:, start:start + self.num_register_tokens].mean(dim=1)
        if not self.class_token:
            raise ValueError(f"pooling {pool!r}: '{self.model_name}' has no cls token (use mean)")
        return x[:, 0] if pool == "cls" else torch.cat([x[:, 0], patches], dim=1)

    def parse_layer(self, layer: str) -> tuple[str, str | None]:
        base, _, pool = layer.partition(".")
        if pool == "reg" and base in self.token_layers and self.num_register_tokens:
            return base, pool
        return super().parse_layer(layer)

    # ------------------------------------------------------------------------------ weights
    def key_maps(self) -> list[KeyMap]:
        return family_keymaps(self.release, self)

    def load_weights(self, checkpoint: str | Any | None = None, strict: bool | None = None) -> LoadReport:
        """Detect the checkpoint's format (refusing another family's), pick the right part
        (teacher backbone, base encoder, target encoder), convert and load; the report names
        the format, the part used and everything ignored."""
        checkpoint = checkpoint if checkpoint is not None else self.checkpoint
        if checkpoint is None:
            raise ValueError("no checkpoint given")
        report = load_pretrained(self, checkpoint, strict=self.strict if strict is None else strict,
                                 section=self.checkpoint_key)
        self.load_report = report
        return report
