"""Typed schemas of ``task=reconstruct`` and ``task=pretrain``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore

from selfsup_vis.config.schemas import FigureFormat, TaskConfig

#: the mask fill of the "masked" panel (black merges with dark images)
IMAGENET_MEAN_FILL = (0.485, 0.456, 0.406)


class ReconstructionDisplay(StrEnum):
    """How a norm-pix model's masked patches are shown (reconstruction.display)."""

    visible = "visible"
    original = "original"
    normalized = "normalized"


@dataclass
class ReconstructTaskConfig(TaskConfig):
    """Four-panel reconstructions of a masked-image model (MAE, SimMIM, MaskFeat)."""

    _target_: str = "selfsup_vis.tasks.reconstruct.run"
    name: str = "reconstruct"
    # an image file, a folder, or a list of them; null: samples of the dataset's eval split
    images: Any = None
    max_images: int = field(default=8, metadata={"min": 1})
    split: str | None = None  # dataset split when no images are given (default: eval_split)
    seed: int = field(default=0, metadata={"min": 0})  # seeds the masks (one generator per image: seed, image position)
    # override the model's mask ratio
    mask_ratio: float | None = field(default=None, metadata={"gt": 0, "lt": 1})
    mask: str | None = None  # .npy mask (h, w) or (N, h, w), 1 = masked; overrides seed/ratio
    resize: str = "crop"  # crop: shorter side to img_size + center crop | stretch: plain resize
    batch_size: int = field(default=8, metadata={"min": 1})
    device: str = "auto"  # auto (cuda when available and trainer.accelerator is not cpu) | cpu | cuda
    formats: list[FigureFormat] = field(default_factory=lambda: [FigureFormat.png])
    # how a norm-pix model's masked patches are de-normalised for display:
    # visible (mean/std of the display_neighbours nearest visible patches; no hidden information)
    # | original (each patch's own mean/std: MMSelfSup's way, uses the hidden patches' statistics)
    # | normalized (prediction and target in the model's own target space)
    display: ReconstructionDisplay = ReconstructionDisplay.visible
    display_neighbours: int = field(default=4, metadata={"min": 1})
    # RGB (0..1) of the masked area in the "masked" panel; default the ImageNet mean (MMSelfSup)
    mask_fill: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN_FILL))
    mask_outline: bool = True  # outline the masked area on the masked / reconstruction panels


@dataclass
class PretrainTaskConfig(TaskConfig):
    """Train (or continue training) an algorithm with the configured callbacks."""

    _target_: str = "selfsup_vis.tasks.pretrain.run"
    name: str = "pretrain"
    ckpt_path: str | None = None  # resume a Lightning checkpoint of the same model (e.g. last.ckpt)
    # used when neither trainer.max_epochs nor trainer.max_steps is set
    default_max_epochs: int = field(default=10, metadata={"min": 1})
    # add Lightning's ModelCheckpoint (last + every epoch) and LearningRateMonitor when the
    # callbacks config has none of their kind (e.g. callbacks=none)
    default_callbacks: bool = True
    # where every ModelCheckpoint writes (conf/callbacks/default.yaml and the added defaults)
    checkpoint_dir: str = "${hydra:runtime.output_dir}/checkpoints"


def register_train_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="schema/task", name="reconstruct", node=ReconstructTaskConfig)
    cs.store(group="schema/task", name="pretrain", node=PretrainTaskConfig)
