"""Layers, pooling and final norm reach a model through its constructor and are validated there;
named layers come from timm's ``forward_intermediates`` with mmpretrain's meanings, bit-equal to
the hand-written forwards, and ``model=timm`` exposes intermediate layers of any timm model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException

from selfsup_vis.models import build_model
from selfsup_vis.models.backbones import (
    LAYER_MEANINGS,
    named_intermediates,
    resnet_stages,
    swin_stages,
    timm_layer_names,
    vit_blocks,
    vit_embed,
)
from selfsup_vis.tasks.common import run_task
from tests.conftest import compose_cfg

TSNE_SMALL = ["task=tsne", "task.backend=pca", "task.cache=false", "task.projector=false",
              "dataset.val_samples_per_class=2", "dataset.batch_size=8", "trainer.enable_progress_bar=false"]


def test_unknown_pooling_fails_at_compose_time_naming_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg(["task=tsne", "model=mae_tiny", "task.pooling=avg"])
    msg = str(e.value) + str(e.value.__cause__)
    assert "avg" in msg and all(p in msg for p in ("cls", "mean", "cls+mean", "gap"))
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["model=mae_tiny", "model.pooling=avg"])


def test_pooling_a_model_cannot_do_fails_at_construction():
    moco = compose_cfg(["model=mocov2_tiny"]).model
    with pytest.raises(ValueError, match=r"pooling='cls'.*feature maps only.*valid poolings: gap"):
        build_model(moco, pooling="cls")
    with pytest.raises(ValueError, match="has no final norm"):
        build_model(moco, final_norm_blocks=True)
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*layer4"):
        build_model(moco, predict_layers=["layer9"])
    m = build_model(compose_cfg(["model=mae_tiny"]).model, pooling="mean", predict_layers=["block1", "norm"])
    assert m.pooling == "mean" and m.predict_layers == ["block1", "norm"]


def test_final_norm_blocks_through_the_constructor():
    cfg = compose_cfg(["model=mae_tiny"]).model
    x = torch.randn(2, 3, 64, 64)
    plain = build_model(cfg).eval()
    normed = build_model(cfg, final_norm_blocks=True).eval()
    normed.load_state_dict(plain.state_dict())
    last = f"block{len(plain.encoder.blocks) - 1}"
    torch.testing.assert_close(normed.extract_features(x, [last])[last], plain.extract_features(x, ["norm"])["norm"])


@pytest.mark.slow
def test_tsne_pooling_mean_gives_mean_features(compose_in, tmp_path):
    torch.manual_seed(0)
    ref = build_model(compose_cfg(["model=mae_tiny"]).model).eval()
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "mae.ckpt")
    cfg = compose_in([*TSNE_SMALL, "model=mae_tiny", "task.layers=[norm,block1]", "task.pooling=mean",
                      f"model.checkpoint={tmp_path / 'mae.ckpt'}"])
    s = run_task(cfg)
    assert s["n_samples"] == 16
    import hydra

    from selfsup_vis.data.transforms import pipeline_for_model

    dm = hydra.utils.instantiate(cfg.dataset)
    ds = dm.dataset("val", pipeline_for_model(cfg.model, "eval", crop_pct=dm.eval_crop_pct))
    images = torch.stack([ds[i]["image"] for i in range(16)])
    want = ref.extract_features(images, ["norm.mean", "block1.mean", "norm.cls"])
    got = np.load(tmp_path / "features" / "norm.npy")
    np.testing.assert_allclose(got, want["norm.mean"].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "features" / "block1.npy"), want["block1.mean"].numpy(), atol=1e-5)
    assert not np.allclose(got, want["norm.cls"].numpy(), atol=1e-3)


def test_timm_model_exposes_intermediate_layers_in_tsne(compose_in, tmp_path):
    cfg = compose_in([*TSNE_SMALL, "model=timm", "model.name=resnet18", "model.img_size=32",
                      "task.layers=[layer3]"])
    s = run_task(cfg)
    assert list(s["layers"]) == ["layer3"] and s["layers"]["layer3"]["feature_dim"] == 256
    assert np.load(tmp_path / "features" / "layer3.npy").shape == (16, 256)


def test_timm_layer_names_follow_the_table():
    import timm

    assert timm_layer_names(timm.create_model("resnet18")) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8)
    assert timm_layer_names(vit)[:2] == ["block0", "block1"]
    assert timm_layer_names(timm.create_model("convnext_atto"))[0] == "stage0"
    for name in ("stem", "layerN", "blockN", "stageN", "norm", "neck", "pre_logits", "logits"):
        assert name in LAYER_MEANINGS


def test_timm_vit_token_layers_take_pooling():
    cfg = compose_cfg(["model=timm", "model.name=vit_tiny_patch16_224", "model.img_size=32",
                       "+model.model_kwargs={patch_size: 8, img_size: 32}", "model.num_classes=3"]).model
    m = build_model(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    f = m.extract_features(x, ["block2.cls", "block2.mean", "block2.cls+mean"])
    tokens = m.model.blocks[:3](m.model.norm_pre(m.model.patch_drop(m.model._pos_embed(m.model.patch_embed(x)))))
    torch.testing.assert_close(f["block2.cls"], tokens[:, 0])
    torch.testing.assert_close(f["block2.mean"], tokens[:, 1:].mean(1))


def test_intermediates_are_bit_equal_to_the_hand_written_forwards():
    torch.manual_seed(0)
    mae = build_model(compose_cfg(["model=mae_tiny"]).model).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, outs = named_intermediates(mae.encoder, x, {"block1", "block3"})
        ref_final, ref = vit_blocks(mae.encoder, vit_embed(mae.encoder, x))
        assert torch.equal(final, ref_final) and torch.equal(outs["block1"], ref["block1"])
        moco = build_model(compose_cfg(["model=mocov2_tiny"]).model).eval()
        y = torch.randn(2, 3, 64, 64)
        last, outs = named_intermediates(moco.backbone, y, {"stem", "layer2"})
        ref_last, ref = resnet_stages(moco.backbone, y)
        assert torch.equal(last, ref_last) and torch.equal(outs["stem"], ref["stem"])
        assert torch.equal(outs["layer2"], ref["layer2"])
        sim = build_model(compose_cfg(["model=simmim_tiny"]).model).eval()
        final, outs = named_intermediates(sim.encoder, y, {"stage1"})
        ref_final, ref = swin_stages(sim.encoder, y)
        assert torch.equal(final, ref_final) and torch.equal(outs["stage1"], ref["stage1"])
