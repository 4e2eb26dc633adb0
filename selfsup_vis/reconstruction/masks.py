"""Which model reconstructs, and the masks it reconstructs with: seeded per image (drawn by the
model's own ``mask_generator()``, the one its training pipeline uses) or loaded from a user's .npy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup_vis.models import MaskedImageModule, families, model_class


def masked_image_model(model: Any) -> MaskedImageModule:
    """``model`` itself when it is a masked-image model; a clear error otherwise."""
    if isinstance(model, MaskedImageModule):
        return model
    raise TypeError(f"reconstruction needs a masked-image model (a MaskedImageModule: MAE, SimMIM, "
                    f"MaskFeat, ...); got {type(model).__name__} '{getattr(model, 'model_name', '?')}'")


def check_reconstructs(model_cfg: Any) -> None:
    """Fail before loading any weights when ``model`` is not a masked-image model."""
    try:
        cls = model_class(model_cfg)
    except ValueError as err:
        raise ValueError(f"task=reconstruct needs a masked-image model: {err}") from None
    if not issubclass(cls, MaskedImageModule):
        masked = sorted(f.name for f in families().values() if f.reconstructs)
        raise ValueError(
            f"task=reconstruct needs a masked-image model (a family of {', '.join(masked)}); "
            f"model={model_cfg.get('name')!r} is {cls.__module__}.{cls.__qualname__}, which "
            f"reconstructs nothing"
        )


# ----------------------------------------------------------------------------- masks
def _image_generator(seed: int, position: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(position))


def make_masks(model: Any, n: int, seed: int, mask_ratio: float | None = None,
               start: int = 0) -> torch.Tensor:
    """(n, g, g) int64 masks (1 = masked), image ``start + i`` drawn from its own generator
    seeded by (seed, position), so a mask does not depend on the other images."""
    draw = masked_image_model(model).mask_generator(None if mask_ratio is None else float(mask_ratio))
    return torch.stack([draw(_image_generator(seed, start + i)) for i in range(n)]).long()


def load_mask_file(path: str | Path, n: int, grid: int) -> torch.Tensor:
    """A user mask (.npy): (h, w) for every image or (N, h, w), 1 = masked. A coarser grid
    (dividing the model's) is upsampled; a finer one must be constant on each patch."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"task.mask: mask file not found: {p}")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"task.mask: cannot read {p} as a .npy array: {err}") from err
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.broadcast_to(arr, (n, *arr.shape))
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] not in (1, n):
        raise ValueError(f"task.mask: {p} has shape {arr.shape}; expected (h, w) or ({n}, h, w) "
                         f"with h = w on the model's {grid}x{grid} patch grid")
    if arr.shape[0] == 1:
        arr = np.broadcast_to(arr, (n, *arr.shape[1:]))
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"task.mask: {p} must hold only 0 (visible) and 1 (masked)")
    side = arr.shape[1]
    m = torch.tensor(np.array(arr), dtype=torch.long)
    if side == grid:
        return m
    if grid % side == 0:
        r = grid // side
        return m.repeat_interleave(r, 1).repeat_interleave(r, 2)
    if side % grid == 0:
        r = side // grid
        blocks = m.view(n, grid, r, grid, r)
        if not bool((blocks.amax(dim=(2, 4)) == blocks.amin(dim=(2, 4))).all()):
            raise ValueError(f"task.mask: {p} ({side}x{side}) is not constant on the model's "
                             f"{grid}x{grid} patches")
        return blocks[:, :, 0, :, 0].contiguous()
    raise ValueError(f"task.mask: {p} is {side}x{side}; the model's patch grid is {grid}x{grid} "
                     f"(give a mask on that grid or one whose side divides / is a multiple of it)")
