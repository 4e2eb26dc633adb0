"""Mask generators of the masked-image models (MAE random, SimMIM, MaskFeat/BEiT blockwise).

Same algorithms as mmpretrain's ``MAEViT.random_masking``, ``SimMIMMaskGenerator`` and
``BEiTMaskGenerator``, but drawing from an optional ``torch.Generator`` so that masks are
reproducible per sample. Masks are LongTensors with 1 = masked. The settings are not decided
here (no defaults: the model schemas have them): each masked-image family builds its generator
from its constructor arguments (``mask_generator()`` / ``mask_generator_from_config(cfg)``), and
the training pipeline, ``task=reconstruct`` and the reconstruction callback all ask the family.
"""

from __future__ import annotations

import math

import torch


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Integer in [low, high] inclusive, like ``random.randint``."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


class RandomMaskGenerator:
    """MAE: ``int(L * (1 - mask_ratio))`` patches kept, chosen by the order of uniform noise
    (the model's own ``forward_encoder`` masks the same way), on a ``grid`` x ``grid`` map."""

    def __init__(self, grid: int, mask_ratio: float) -> None:
        self.grid, self.mask_ratio = int(grid), float(mask_ratio)
        self.num_patches = self.grid * self.grid
        self.len_keep = int(self.num_patches * (1 - self.mask_ratio))
        if not 0 < self.len_keep < self.num_patches:
            raise ValueError(f"mask_ratio={mask_ratio} keeps {self.len_keep} of {self.num_patches} patches; "
                             f"use a ratio in (0, 1)")

    def __call__(self, generator: torch.Generator | None = None) -> torch.Tensor:
        order = torch.argsort(torch.rand(self.num_patches, generator=generator))
        mask = torch.ones(self.num_patches, dtype=torch.long)
        mask[order[: self.len_keep]] = 0
        return mask.view(self.grid, self.grid)

    def __repr__(self) -> str:
        return f"RandomMaskGenerator(grid={self.grid}, mask_ratio={self.mask_ratio})"


class SimMIMMaskGenerator:
    """Random square blocks of ``mask_patch_size`` px covering ``mask_ratio`` of the image,
    returned at the model's patch resolution (``input_size // model_patch_size``)."""

    def __init__(
        self,
        input_size: int,
        mask_patch_size: int,
        model_patch_size: int,
        mask_ratio: float,
    ) -> None:
        if input_size % mask_patch_size or mask_patch_size % model_patch_size:
            raise ValueError(
                f"SimMIM mask: input_size {input_size} must be divisible by mask_patch_size "
                f"{mask_patch_size}, which must be divisible by model_patch_size {model_patch_size}"
            )
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"SimMIM mask: mask_ratio must be in (0, 1), got {mask_ratio}")
        self.input_size = input_size
        self.mask_patch_size = mask_patch_size
        self.model_patch_size = model_patch_size
        self.mask_ratio = mask_ratio
        self.rand_size = input_size // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.token_count = self.rand_size**2
        self.mask_count = int(math.ceil(self.token_count * mask_ratio))

    def __call__(self, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.randperm(self.token_count, generator=generator)[: self.mask_count]
        mask = torch.zeros(self.token_count, dtype=torch.long)
        mask[idx] = 1
        mask = mask.view(self.rand_size, self.rand_size)
        return mask.repeat_interleave(self.scale, 0).repeat_interleave(self.scale, 1)

    def __repr__(self) -> str:
        return (
            f"SimMIMMaskGenerator(input_size={self.input_size}, mask_patch_size="
            f"{self.mask_patch_size}, model_patch_size={self.model_patch_size}, "
            f"mask_ratio={self.mask_ratio})"
        )


class BlockwiseMaskGenerator:
    """BEiT-style blockwise mask (MaskFeat: 78 of 14×14 patches, blocks of ≥ 15 patches)."""

    def __init__(
        self,
        input_size: int | tuple[int, int],
        num_masking_patches: int,
        min_num_patches: int,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        self.height, self.width = (
            (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        )
        if not 0 < num_masking_patches < self.height * self.width:
            raise ValueError(
                f"blockwise mask: num_masking_patches must be in (0, {self.height * self.width}),"
                f" got {num_masking_patches}"
            )
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def _add_block(
        self, mask: torch.Tensor, max_mask_patches: int, generator: torch.Generator | None
    ) -> int:
        delta = 0
        for _ in range(10):
            target_area = _uniform(self.min_num_patches, max_mask_patches, generator)
            aspect_ratio = math.exp(_uniform(*self.log_aspect_ratio, generator))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = _randint(0, self.height - h, generator)
                left = _randint(0, self.width - w, generator)
                block = mask[top : top + h, left : left + w]
                num_masked = int(block.sum())
                if 0 < h * w - num_masked <= max_mask_patches:
                    delta += h * w - num_masked
                    block.fill_(1)
                if delta > 0:
                    break
        return delta

    def __call__(self, generator: torch.Generator | None = None) -> torch.Tensor:
        mask = torch.zeros(self.height, self.width, dtype=torch.long)
        count = 0
        while count < self.num_masking_patches:
            max_mask_patches = min(self.num_masking_patches - count, self.max_num_patches)
            delta = self._add_block(mask, max_mask_patches, generator)
            if delta == 0:
                break
            count += delta
        return mask

    def __repr__(self) -> str:
        return (
            f"BlockwiseMaskGenerator(input_size=({self.height}, {self.width}), "
            f"num_masking_patches={self.num_masking_patches}, "
            f"min_num_patches={self.min_num_patches})"
        )
