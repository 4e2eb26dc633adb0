"""Any MMSelfSup / mmpretrain self-supervised ResNet-50 checkpoint (SimCLR, BYOL, SimSiam, SwAV,
DenseCL, Barlow Twins, MoCo v1/v2, ...) as a backbone for t-SNE, attention (CAMs) and dense
features. Only ``backbone.*`` is loaded, with the MoCo v2 backbone key map (verified against
mmpretrain); every other part (neck / projector, head / predictor, target or momentum network,
queues, prototypes) is named in the load report as ignored."""

from __future__ import annotations

from typing import Any

import torch

from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.keymap import KeyMap, prefixed
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.model import MMSelfSupR50Config
from selfsup_vis.models.backbones import RESNET_LAYERS, build_resnet, named_intermediates
from selfsup_vis.models.base import NOT_HPARAMS, SSLModule

#: MMSelfSup 1.x / mmpretrain algorithm parts that are not the backbone
IGNORED = [
    ("neck.", "SSL neck / projector (not part of the backbone)"),
    ("head.", "SSL head / predictor / loss buffers"),
    ("target_net.", "BYOL / SimSiam target network (EMA copy)"),
    ("momentum_encoder.", "momentum encoder (EMA copy)"),
    ("encoder_k.", "MoCo momentum encoder (EMA copy)"),
    ("queue", "MoCo / DenseCL negative queue"),
    ("queue_ptr", "MoCo queue pointer"),
    ("queue2", "DenseCL dense queue"),
    ("queue2_ptr", "DenseCL dense queue pointer"),
    ("data_preprocessor.", "normalisation constants (taken from model.mean / model.std)"),
]


def mmselfsup_backbone() -> KeyMap:
    return KeyMap("MMSelfSup / mmpretrain SSL ResNet (backbone only)",
                  prefixed(rules.RESNET, "backbone.", "backbone."), ignore=IGNORED)


@takes_schema(MMSelfSupR50Config)
class MMSelfSupResNet(SSLModule):
    """The backbone of an MMSelfSup SSL algorithm; layers ``stem``, ``layer1``..``layer4``."""

    required_prefixes = ("backbone.",)

    def __init__(self, *, img_size: int, depth: int, stem_channels: int, base_channels: int,
                 **common: Any) -> None:
        super().__init__(img_size=img_size, **common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        self.backbone = build_resnet(depth, stem_channels, base_channels)
        self.configure_features()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)

    def available_layers(self) -> list[str]:
        return list(RESNET_LAYERS)

    def default_layers(self) -> list[str]:
        return ["layer4"]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        return named_intermediates(self.backbone, images, layers, need_final=False)[1]

    def key_maps(self) -> list[KeyMap]:
        return [mmselfsup_backbone()]
