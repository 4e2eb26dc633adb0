"""Typed schemas of ``task=reconstruct`` and ``task=pretrain``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from selfsup_vis.config.schemas import FigureFormat


@dataclass
class ReconstructTaskConfig:
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


@dataclass
class PretrainTaskConfig:
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
