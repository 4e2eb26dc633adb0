"""Official MAE (facebookresearch/mae) ``{'model': state_dict}``: ``mae_visualize_vit_*`` /
``mae_pretrain_vit_*_full`` with the decoder, ``mae_pretrain_vit_*`` encoder only. For
features only the encoder is used; the MAE LightningModule (models/mae.py) loads the decoder
through :data:`MAE_DECODER_RULES`."""

from __future__ import annotations

from typing import Any

from selfsup_vis.checkpoints.formats.base import CheckpointFormat, Section
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.checkpoints.provenance import RandomPartsError
from selfsup_vis.checkpoints.rules import OFFICIAL_MAE_DECODER

ENCODER = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight")

MAE_DECODER_RULES = OFFICIAL_MAE_DECODER  # the key map the MAE module already loads with
DECODER_IGNORED = [(f"{k}", "MAE decoder: not used for features") for k in
                   ("decoder_embed.", "mask_token", "decoder_pos_embed", "decoder_blocks.",
                    "decoder_norm.", "decoder_pred.")]

MAE_FULL = CheckpointFormat(
    name="mae_visualize", family="mae",
    description="official MAE with decoder {'model': ...} (mae_visualize_vit_*.pth, mae_pretrain_vit_*_full.pth)",
    sections=(Section("model", "", "encoder + decoder", "model"),),
    required=(*ENCODER, "decoder_embed.weight"), needs_top=("model",),
    rules=[("", "encoder.")], ignore=DECODER_IGNORED,
)

MAE_ENCODER = CheckpointFormat(
    name="mae_pretrain", family="mae",
    description="official MAE encoder only {'model': ...} (mae_pretrain_vit_*.pth: no decoder)",
    sections=(Section("model", "", "encoder", "model"),),
    required=ENCODER, forbidden=("decoder_embed.weight", "blocks.0.ls1.gamma"), needs_top=("model",),
    rules=[("", "encoder.")],
)


def official_mae_full() -> KeyMap:
    """Encoder + decoder of the official layout onto models/mae.py's MAE."""
    return KeyMap("official MAE (facebookresearch/mae)", MAE_DECODER_RULES + [("", "encoder.")])


FORMATS = (MAE_FULL, MAE_ENCODER)


def refuse_without_decoder(model: Any) -> None:
    """Raise when ``model`` (an MAE) got its encoder but no decoder from its checkpoint, unless
    it was built with ``allow_random_parts`` (the reconstruction is then flagged random)."""
    report = getattr(model, "load_report", None)
    if report is None or getattr(model, "allow_random_parts", False):
        return
    missing = [k for k in report.missing if k.startswith("decoder.")]
    if missing:
        raise RandomPartsError(
            f"checkpoint {report.source}: this checkpoint has no decoder ({len(missing)} decoder "
            f"tensors missing; an encoder-only MAE such as mae_pretrain_vit_*.pth), so it cannot "
            f"reconstruct. Use mae_visualize_vit_*.pth or mae_pretrain_vit_*_full.pth, or pass "
            f"model.allow_random_parts=true to run with a random decoder (flagged RANDOM PARTS).")
