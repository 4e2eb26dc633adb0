"""The masked-image family contract: a model that hides patches and predicts them (MAE, SimMIM,
MaskFeat, ...). It owns its mask rule (``mask_generator``: the training pipeline, task=reconstruct
and the reconstruction callback all draw masks through it) and returns its reconstruction as one
typed record, so that nothing above the models switches on the algorithm's name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from selfsup_vis.config.defaults import schema_values
from selfsup_vis.models.base import SSLModule

MaskGenerator = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MaskedReconstruction:
    """A batch reconstructed with a known mask. ``space`` says what the model predicts:
    ``pixels`` (``reconstruction`` and the four display ``panels`` are filled) or ``features``
    (a per-patch target such as HOG; ``panels`` is empty, ``hog`` may hold cells to draw).

    Display (``selfsup_vis.reconstruction.display``) reads ``inputs``, ``patch_size`` and
    ``norm_pix_eps``: a per-patch-normalised target (MAE norm-pix) sets ``norm_pix_eps`` and lays
    ``pred``/``target`` out as ``models.mae.patchify`` does, so that the display can de-normalise
    masked patches without the hidden patches' own statistics; such a model returns no
    ``reconstruction`` and no ``panels`` (an image would need the hidden statistics). ``panels``
    are the plain de-normalisation of ``reconstruction`` (a model that predicts pixels)."""

    space: Literal["pixels", "features"]
    mask: torch.Tensor  # (B, g, g) int64, 1 = masked: the mask the model used
    mask_pixels: torch.Tensor  # (B, 1, H, W) float, 1 = masked pixel
    pred: torch.Tensor  # the prediction in the model's target space
    target: torch.Tensor  # the target in the same space
    loss: torch.Tensor  # the training loss of this batch and mask
    per_patch_error: torch.Tensor  # (B, g*g): the error of each patch in the target space
    error_kind: str  # what per_patch_error measures (norm_pix_mse, pixel_mse, hog_mse, ...)
    original: torch.Tensor  # (B, 3, H, W) the input in display range 0..1
    target_name: str = "pixels"  # what the model predicts, for figure titles ("HOG")
    reconstruction: torch.Tensor | None = None  # (B, 3, H, W) model-normalised (pixel predictions only)
    panels: dict[str, torch.Tensor] = field(default_factory=dict)  # display 0..1 (pixels only)
    hog: dict[str, torch.Tensor] | None = None  # target/pred/mixed HOG cells (B, 3, nbins, h, w)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, ...) saved with the figure
    inputs: torch.Tensor | None = None  # (B, 3, H, W) the model-normalised input (pixels only)
    patch_size: int = 0  # side of a patch of ``pred``/``target`` (norm-pix layout)
    norm_pix_eps: float | None = None  # set: target = each patch normalised by its own mean/std


class MaskedImageModule(SSLModule):
    """Base of the masked-image families. A family sets ``mask_args`` (the constructor arguments
    its mask generator is built from), implements :meth:`build_mask_generator` and
    :meth:`reconstruct`, sets ``self.grid`` (side of the mask's patch grid), and sets
    ``data_masks = True`` when its training batches carry the mask (drawn by the data pipeline
    with this family's generator) rather than the model masking inside ``forward``."""

    #: constructor arguments the mask generator is built from
    mask_args: ClassVar[tuple[str, ...]] = ()
    #: the training pipeline draws the masks (batch["mask"]); False: the model masks itself
    data_masks: ClassVar[bool] = False
    #: side of the patch grid the masks live on
    grid: int

    # ----------------------------------------------------------------------------- masks
    @classmethod
    def build_mask_generator(cls, args: Mapping[str, Any], mask_ratio: float | None = None
                             ) -> MaskGenerator:
        """The generator from constructor arguments ``args`` (the ``mask_args``); ``mask_ratio``
        overrides its ratio. Called with an optional ``torch.Generator``, it returns one (h, w)
        int64 mask (1 = masked)."""
        raise NotImplementedError

    @classmethod
    def mask_generator_from_config(cls, cfg: Mapping[str, Any], mask_ratio: float | None = None
                                   ) -> MaskGenerator:
        """The generator a model built from ``cfg`` would own, without building it (the training
        pipeline uses this); keys ``cfg`` lacks (or sets to null) take the schema's defaults."""
        defaults = schema_values(cls.schema)
        args = {k: cfg.get(k) if cfg.get(k) is not None else defaults.get(k) for k in cls.mask_args}
        return cls.build_mask_generator(args, mask_ratio)

    def mask_generator(self, mask_ratio: float | None = None) -> MaskGenerator:
        """This model's generator (``mask_ratio`` overrides its ratio / number of patches)."""
        return self.build_mask_generator({k: self.hparams[k] for k in self.mask_args}, mask_ratio)

    def make_mask(self, batch: int, generator: torch.Generator | None = None,
                  mask_ratio: float | None = None) -> torch.Tensor:
        """(B, h, w) int64 masks from :meth:`mask_generator`, drawn one after the other."""
        gen = self.mask_generator(mask_ratio)
        return torch.stack([gen(generator) for _ in range(batch)]).long()

    def batch_mask(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The mask the training pipeline drew (``data_masks`` families); a clear error when the
        batch has none, i.e. the data pipeline was built without this model's mask generator."""
        if "mask" not in batch:
            raise KeyError(f"{type(self).__name__} '{self.model_name}' trains on masks drawn by the data "
                           f"pipeline, but the batch has no 'mask': build the training pipeline with "
                           f"selfsup_vis.models.model_pipeline(model_cfg), which adds the model's "
                           f"mask generator")
        return batch["mask"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The loss ``forward`` returns (``data_masks`` families get the pipeline's mask)."""
        images = batch["image"]
        out = self(images, self.batch_mask(batch)) if self.data_masks else self(images)
        self.log_losses({"loss": out["loss"]}, images.shape[0])
        return out["loss"]

    # ----------------------------------------------------------------------------- reconstruct
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> MaskedReconstruction:
        """Reconstruct normalised ``images`` with exactly ``mask`` ((B, g, g), 1 = masked;
        None: drawn from :meth:`mask_generator` with ``generator``)."""
        raise NotImplementedError

    def pixel_panels(self, images: torch.Tensor, rec: torch.Tensor, pix: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """The four display panels (0..1) from normalised images, a reconstruction in the same
        space and the pixel mask (B, 1, H, W; 1 = masked)."""
        return {
            "original": self.denormalize(images),
            "masked": self.denormalize(images) * (1 - pix),
            "reconstruction": self.denormalize(rec),
            "reconstruction_visible": self.denormalize(images * (1 - pix) + rec * pix),
        }
