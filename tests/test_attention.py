"""task=attention: attention probabilities and rollout against independent computations, the
pointing game on hand-made maps, Grad-CAM of a classifier trained here vs an untrained one,
CLS attention of the mmpretrain MAE fixture, the task end to end for a ViT, a ResNet and a
Swin, the AttentionSnapshot callback in a real training, and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from selfsup_vis.attention.compute import MapSpec, check_spec, compute_maps
from selfsup_vis.attention.layers import find_network
from selfsup_vis.attention.metric import PointingGame, area_fraction, energy_inside, pointing_hits
from selfsup_vis.attention.vit import attention_probs, cls_attention, rollout
from selfsup_vis.data.synthetic import SyntheticShapes
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.models import build_model
from tests.conftest import compose_cfg, train_classifier
from tests.conftest import run_job as run_task

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SELFSUP_VIS_FIXTURES", REPO.parent / "shared" / "fixtures" / "mmpretrain"))
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------ pointing game
def test_pointing_game_on_hand_made_maps():
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:, 2:4, 2:6] = True  # 8 of 64 pixels
    maps = torch.zeros(4, 8, 8)
    maps[0, 3, 3] = 1.0  # peak inside
    maps[1, 7, 7] = 1.0  # peak outside
    maps[2] = 1.0  # uniform: points nowhere -> miss; energy = the area fraction exactly
    maps[3, 1, 1] = 1.0  # one pixel off the mask: a hit only with tolerance 1
    assert pointing_hits(maps, masks).tolist() == [True, False, False, False]
    assert pointing_hits(maps, masks, tolerance=1).tolist() == [True, False, False, True]
    assert energy_inside(maps, masks).tolist() == [1.0, 0.0, 0.125, 0.0]
    assert area_fraction(masks).tolist() == [0.125] * 4
    metric = PointingGame()
    metric.update(maps[:2], masks[:2])
    metric.update(maps[2:], masks[2:])
    out = metric.compute()
    assert out["pointing_accuracy"] == 0.25 and out["num_images"] == 4
    assert out["energy_inside"] == pytest.approx(1.125 / 4) and out["area_fraction"] == 0.125
    # an all-zero map has no mass: left out of the energy mean, a miss in the pointing game
    metric.update(torch.zeros(1, 8, 8), masks[:1])
    assert metric.compute()["pointing_accuracy"] == 0.2
    assert metric.compute()["energy_inside"] == pytest.approx(1.125 / 4)



def test_synthetic_object_mask_is_the_shape_and_images_are_unchanged():
    ds = SyntheticShapes("conflict", num_classes=3, image_size=32)
    img = np.asarray(ds.load_image(0)).astype(float)
    mask = ds.object_mask(0)
    assert mask.shape == (32, 32) and mask.dtype == bool and 0.1 < mask.mean() < 0.7
    assert not mask[0, 0] and mask[16, 16]  # background corner, centred shape
    # the background is a light, flat grey; the filled shape is textured
    assert img[~mask].std(axis=0).mean() < img[mask].std(axis=0).mean()
    assert SyntheticShapes("texture_only", 3, 32).object_mask(0) is None


# ------------------------------------------------------------------------------ ViT attention
def _tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=3, num_heads=2, num_classes=0)
    for p in vit.parameters():  # non-trivial attention (timm initialises many weights to ~0)
        p.data.normal_(0, 0.3)
    return vit.eval()


def _reference_probs(vit: VisionTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    """Attention written out: LN -> qkv -> q·kᵀ/√d -> softmax, block by block (double)."""
    vit = vit.double()
    t = vit._pos_embed(vit.patch_embed(x.double()))
    out = []
    for blk in vit.blocks:
        h = blk.norm1(t)
        B, N, C = h.shape
        heads = blk.attn.num_heads
        qkv = (h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).reshape(B, N, 3, heads, C // heads)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        out.append(torch.softmax(q @ k.transpose(-2, -1) / (C // heads) ** 0.5, dim=-1))
        t = blk(t)
    vit.float()
    return out


def _reference_rollout(probs: list[torch.Tensor], fusion: str, discard: float) -> torch.Tensor:
    """Abnar & Zuidema with vit-explain's discard rule, one image at a time, plain matrices."""
    maps = []
    for b in range(probs[0].shape[0]):
        n = probs[0].shape[-1]
        result = torch.eye(n, dtype=torch.float64)
        for a in probs:
            fused = {"mean": a[b].mean(0), "max": a[b].max(0).values, "min": a[b].min(0).values}[fusion]
            flat = fused.flatten().clone()
            k = int(flat.numel() * discard)
            if k:
                idx = flat.topk(k, largest=False).indices
                idx = idx[idx != 0]
                flat[idx] = 0
            fused = flat.reshape(n, n)
            a_res = (fused + torch.eye(n, dtype=torch.float64)) / 2
            a_res = a_res / a_res.sum(-1, keepdim=True)
            result = a_res @ result
        row = result[0, 1:]
        maps.append(row / row.sum())
    return torch.stack(maps).reshape(-1, 4, 4)


@pytest.mark.parametrize(("fusion", "discard"), [("mean", 0.0), ("max", 0.0), ("min", 0.3), ("mean", 0.9)])
def test_rollout_equals_an_independent_reference(fusion, discard):
    vit = _tiny_vit()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    net = find_network(torch.nn.ModuleDict({"backbone": vit}))
    probs = attention_probs(net, x)
    ref = _reference_probs(vit, x)
    for i in range(3):
        assert (probs[i].double() - ref[i]).abs().max() < 1e-6
    assert vit.blocks[0].attn.fused_attn == type(vit.blocks[0].attn)(16, 2).fused_attn  # restored
    ours = rollout([probs[i] for i in range(3)], 1, (4, 4), fusion, discard)
    expected = _reference_rollout([p.double() for p in probs.values()], fusion, discard)
    assert (ours.double() - expected).abs().max() < 1e-6
    if discard == 0.0 and fusion == "mean":  # and the CLS map of the last block, re-normalised
        cls = cls_attention(probs[2], 1, (4, 4))
        row = ref[2][:, :, 0, 1:]
        assert (cls.double() - (row / row.sum(-1, keepdim=True)).reshape(2, 2, 4, 4)).abs().max() < 1e-6


@pytest.mark.skipif(not (FIXTURES / "mae.pth").is_file(), reason=f"no fixture mae.pth in {FIXTURES}")
def test_cls_attention_of_the_mmpretrain_mae_fixture(compose_in):
    cfg = compose_in(["model=mae_vit-b16", "model.embed_dim=64", "model.depth=4", "model.num_heads=4",
                      "model.decoder_embed_dim=32", "model.decoder_depth=2", "model.decoder_num_heads=4",
                      f"model.checkpoint={FIXTURES / 'mae.pth'}"])
    model = build_model(cfg.model).eval()
    io = torch.load(FIXTURES / "mae_io.pt", map_location="cpu", weights_only=True)
    x = io["inputs"]["input"]
    net = find_network(model)
    probs = attention_probs(net, x, [-1])[3]  # (B, heads, 197, 197)
    assert probs.shape == (2, 4, 197, 197)
    assert (probs.sum(-1) - 1).abs().max() < 1e-5  # softmax rows: one over all keys incl. CLS
    assert probs[:, :, 0, 0].min() > 0  # ... of which the CLS key takes a share
    res = compute_maps(model, x, MapSpec("cls_attention"))
    assert res.keys == ["head0", "head1", "head2", "head3", "mean"] and res.layer == "block3"
    assert res.maps.shape == (2, 5, 224, 224) and res.grid_maps.shape == (2, 5, 14, 14)
    # CLS -> patch attention per head, re-normalised over the 196 patches: sums to one
    assert np.abs(res.grid_maps.reshape(2, 5, -1).sum(-1) - 1).max() < 1e-5
    # and it is the fixture's own attention: heads differ from each other and from uniform
    assert res.grid_maps[:, :4].reshape(2, 4, -1).std(-1).min() > 1e-4
    assert np.abs(res.grid_maps[:, 0] - res.grid_maps[:, 1]).max() > 1e-4


# ------------------------------------------------------------------------------ the task
SMALL = ["task.max_images=3", "task.batch_size=2", "dataset.num_classes=3", "dataset.val_samples_per_class=2",
         "logger=csv", *QUIET]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "method", "extra", "layer", "panels"), [
    ("mae_tiny", "cls_attention", [], "block3", ["head0", "head1", "head2", "head3", "mean"]),
    ("mae_tiny", "rollout", ["task.head_fusion=max", "task.discard_ratio=0.5"], "block0-3", ["rollout"]),
    ("mocov2_tiny", "eigencam", ["task.target_layers=[layer3,layer4]"], "layer3", ["eigencam"]),
    ("simmim_tiny", "feature_norm", [], "stage3", ["feature_norm"]),
])
def test_task_end_to_end_vit_resnet_swin(compose_in, tmp_path, model, method, extra, layer, panels):
    cfg = compose_in(["task=attention", f"model={model}", f"task.method={method}", *extra, *SMALL])
    summary = run_task(cfg)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["results"].keys() == summary["results"].keys()
    entry = next(iter(saved["results"].values()))
    assert entry["layer"].startswith(layer) and entry["panels"] == panels
    assert len(saved["results"]) == (2 if "layer3,layer4" in " ".join(extra) else 1)
    maps = np.load(entry["maps"])
    assert maps.shape == (3, len(panels), 64, 64) and np.isfinite(maps).all()
    assert (tmp_path / "images.txt").read_text().splitlines() == saved["images"]
    assert len(entry["figures"]) == 3 and all(Path(f).is_file() for f in entry["figures"] + entry["grid"])
    # the synthetic data knows its objects: the score and what know-nothing maps get
    score = entry["score"]
    assert score["num_images"] == 3 and 0 < score["area_fraction"] < 1
    assert set(saved["pointing_game"]["baselines"]) == {"random", "centre"}
    key = next(iter(saved["results"]))  # the headline of sweep tables, report.html and loggers
    assert saved["headline"][f"pointing_accuracy/{key}"] == score["pointing_accuracy"]
    assert saved["headline"][f"energy_inside/{key}"] == score["energy_inside"]
    assert saved["weights"] == "random" and saved["provenance"]["flag"] == "RANDOM WEIGHTS"
    images = list((tmp_path / "csv" / "images").glob("attention_*grid*.png"))
    assert images, "the grid reached the CSV logger"
    assert "attention/" in (tmp_path / "csv" / "metrics.csv").read_text()


def test_bad_input_names_the_valid_choices(compose_in):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose_in(["task=attention", "task.method=gradcamm"])
    assert "cls_attention" in str(err.value.__cause__) and "eigencam" in str(err.value.__cause__)
    cfg = compose_in(["task=attention", "model=mocov2_tiny", "task.method=gradcam", *SMALL])
    with pytest.raises(ValueError, match="class-agnostic method: eigencam, feature_norm"):
        run_task(cfg)
    cfg = compose_in(["task=attention", "model=classifier_tiny", "task.method=gradcam",
                      "task.target_layers=[layer9]", *SMALL])
    with pytest.raises(ValueError, match=r"unknown target layer 'layer9'.*valid layers: stem, layer1, layer2"):
        run_task(cfg)
    cfg = compose_in(["task=attention", "model=simmim_tiny", "task.method=cls_attention", *SMALL])
    with pytest.raises(ValueError, match="needs a ViT with a CLS token.*Use one of: eigencam, feature_norm"):
        run_task(cfg)
    cfg = compose_in(["task=attention", "model=mae_tiny", "task.block=7", *SMALL])
    with pytest.raises(ValueError, match=r"task.block=7: mae_tiny has blocks 0..3"):
        run_task(cfg)
    model = build_model(compose_in(["model=mae_tiny"]).model)
    with pytest.raises(ValueError, match="unknown attention method 'attn'; valid: cls_attention, rollout"):
        check_spec(model, MapSpec("attn"))


# ------------------------------------------------------------------------------ Grad-CAM score
def _train_shape_classifier(compose_in, path: Path, steps: int) -> None:
    """classifier_tiny (ResNet-18 layout, 8..64 channels) on 48 px synthetic silhouettes
    (``shape_only``: the shape is the only cue), a plain AdamW loop (conftest); a state dict."""
    cfg = compose_in(["model=classifier_tiny", "model.img_size=48", "model.num_classes=4"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    ds = SyntheticShapes("shape_only", 4, 48, 48, seed=0, transform=pipeline_for_model(cfg.model, "eval", crop_pct=None))
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    train_classifier(model, x, torch.tensor(ds.labels), steps, lr=3e-3)
    torch.save(model.state_dict(), path)


def _gradcam_scores(tmp_path: Path, name: str, checkpoint: Path | None, method: str) -> dict:
    cfg = compose_cfg(["task=attention", "model=classifier_tiny", "model.img_size=48", "model.num_classes=4",
                      f"model.checkpoint={checkpoint or 'null'}", f"task.method={method}",
                      "task.target_layers=[layer2]", "task.tolerance=2", "task.max_images=24",
                      "task.batch_size=24", "task.max_figures=0", "task.split=shape_only", "dataset.num_classes=4",
                      "dataset.image_size=48", "dataset.samples_per_class=6", "dataset.seed=1",  # unseen images
                      "logger=none", *QUIET], tmp_path / name)
    summary = run_task(cfg)
    entry = summary["results"][f"{method}@layer2"]
    return {**entry["score"], "baselines": summary["pointing_game"]["baselines"]}


@pytest.mark.slow
def test_gradcam_points_at_the_shape_only_after_training(compose_in, tmp_path):
    ckpt = tmp_path / "classifier.pt"
    _train_shape_classifier(compose_in, ckpt, steps=40)
    scores = {(trained, method): _gradcam_scores(tmp_path, f"{method}_{trained}",
                                                 ckpt if trained else None, method)
              for trained in (True, False) for method in ("gradcampp", "gradcam")}
    print({k: {m: round(v, 3) for m, v in s.items() if m != "baselines"} for k, s in scores.items()},
          scores[True, "gradcam"]["baselines"])
    random = scores[True, "gradcam"]["baselines"]["random"]
    area = scores[True, "gradcam"]["area_fraction"]
    # Grad-CAM++ of the trained model points at the shape; a random map and the untrained model do not
    assert scores[True, "gradcampp"]["pointing_accuracy"] >= 0.9
    assert scores[True, "gradcampp"]["pointing_accuracy"] >= random["pointing_accuracy"] + 0.4
    assert scores[False, "gradcampp"]["pointing_accuracy"] <= scores[True, "gradcampp"]["pointing_accuracy"] - 0.3
    # plain Grad-CAM: its mass moves onto the shape with training (untrained: ~ the area fraction)
    assert scores[True, "gradcam"]["energy_inside"] >= area + 0.1
    assert abs(scores[False, "gradcam"]["energy_inside"] - area) < 0.1
    assert scores[True, "gradcam"]["pointing_accuracy"] > scores[False, "gradcam"]["pointing_accuracy"]


# ------------------------------------------------------------------------------ the callback
@pytest.mark.slow
def test_attention_snapshot_during_pretrain(compose_in, tmp_path):
    cfg = compose_in(["task=pretrain", "model=mae_tiny", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
                      "dataset.batch_size=8", "dataset.num_classes=3", "dataset.val_samples_per_class=2",
                      "callbacks.embedding=null", "callbacks.feature_health=null", "callbacks.reconstruction=null",
                      "callbacks.attention.num_images=2", "callbacks.attention.every_n_steps=2", "callbacks.attention.min_interval_s=0", "logger=csv",
                      *QUIET])
    run_task(cfg)
    figures = sorted((tmp_path / "attention").glob("attention_step*.png"))
    assert len(figures) == 2  # the first due step (2) and the end of training (step 4)
    maps = np.load(sorted((tmp_path / "attention").glob("attention_step*.npy"))[-1])
    assert maps.shape == (2, 5, 64, 64)  # 4 heads + mean
    metrics = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "train/attention_pointing" in metrics and "train/attention_energy_inside" in metrics
    assert list((tmp_path / "csv" / "images").glob("train_attention_step*.png"))


def test_attention_snapshot_never_breaks_training(tmp_path, caplog):
    import pytorch_lightning as pl

    from selfsup_vis.callbacks import AttentionSnapshot

    cb = AttentionSnapshot(method="gradcam", dirpath=str(tmp_path))  # a CAM on a headless MAE
    model = build_model(compose_cfg(["model=mae_tiny"]).model)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb], default_root_dir=tmp_path)
    images = torch.randn(8, 3, 64, 64)
    loader = torch.utils.data.DataLoader([{"image": im, "label": 0} for im in images], batch_size=4)
    with caplog.at_level("WARNING"):
        trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 1 and cb._unsupported
    assert "class-agnostic" in caplog.text and not list(tmp_path.glob("attention_step*"))


@pytest.mark.slow
def test_cue_conflict_targets_side_by_side_and_a_vit_classifier(compose_in, tmp_path):
    """Shape vs texture evidence in one figure (a ResNet), and Grad-CAM of a ViT classifier
    through the token reshape (default layer: the last block's norm1; extra token dropped)."""
    cfg = compose_in(["task=attention", "model=classifier_tiny", "model.num_classes=3", "task.method=gradcam",
                      "task.target_category=cue-conflict", "task.split=conflict", *SMALL])
    entry = next(iter(run_task(cfg)["results"].values()))
    assert entry["panels"] == ["shape", "texture"] and entry["target"] == "cue-conflict"
    first = next(iter(entry["labels"].values()))
    assert first == ["shape: circle", "texture: square"]  # circle1-square1
    assert np.load(entry["maps"]).shape == (3, 2, 64, 64)
    vit = ["model=mmcls_vit-b16", "model.arch.embed_dim=32", "model.arch.depth=2", "model.arch.num_heads=2",
           "model.arch.patch_size=8", "model.img_size=64", "model.num_classes=3"]
    cfg = compose_cfg(["task=attention", *vit, "task.method=gradcam", "task.target_category=square", *SMALL],
                      tmp_path / "vit")
    entry = next(iter(run_task(cfg)["results"].values()))
    assert entry["layer"] == "blocks.1.norm1" and entry["panels"] == ["square"]
    maps = np.load(entry["maps"])
    assert maps.shape == (3, 1, 64, 64) and maps.max() > 0


@pytest.mark.slow
def test_image_folder_with_a_parallel_mask_folder(compose_in, tmp_path):
    """Masks follow the images through resize + center crop; without masks the score is omitted."""
    from PIL import Image

    from selfsup_vis.attention.masks import find_mask, load_mask

    root, masks = tmp_path / "images", tmp_path / "masks"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (masks / c).mkdir(parents=True)
        for i in range(2):
            img = np.full((60, 80, 3), 230, np.uint8)  # not square: the crop matters
            y, x = rng.integers(5, 25), rng.integers(5, 45)
            img[y : y + 30, x : x + 30] = 20
            Image.fromarray(img).save(root / c / f"{i}.jpg")
            Image.fromarray(((img[..., 0] < 128) * 255).astype(np.uint8)).save(masks / c / f"{i}.png")
    cfg = compose_in(["model=mocov2_tiny"])
    crop = 0.875
    pipe = pipeline_for_model(cfg.model, "eval", crop_pct=crop)
    image = pipe(Image.open(root / "a" / "0.jpg").convert("RGB"))["image"]
    mask = load_mask(find_mask(masks, "a/0.jpg"), 64, crop)
    dark = (image.mean(0) < 0).numpy()
    assert (dark & mask).sum() / (dark | mask).sum() > 0.9
    with pytest.raises(FileNotFoundError, match="no mask for image 'a/9.jpg'"):
        find_mask(masks, "a/9.jpg")
    common = ["task=attention", "model=mocov2_tiny", "task.method=feature_norm", "dataset=image_folder",
              f"dataset.root={root}", "task.max_images=4", "task.max_figures=1", "logger=none", *QUIET]
    summary = run_task(compose_cfg([*common, f"task.masks_root={masks}"], tmp_path / "with"))
    assert summary["results"]["feature_norm@layer4"]["score"]["num_images"] == 4
    summary = run_task(compose_cfg(common, tmp_path / "without"))
    assert "score" not in summary["results"]["feature_norm@layer4"]
    assert summary["pointing_game"].startswith("omitted")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_attention_and_gradcam_in_bf16_on_gpu(compose_in, tmp_path):
    for model, method in (("mae_tiny", "cls_attention"), ("classifier_tiny", "gradcam")):
        cfg = compose_cfg(["task=attention", f"model={model}", f"task.method={method}", "trainer=gpu",
                           "trainer.precision=bf16-mixed", *SMALL], tmp_path / model)
        entry = next(iter(run_task(cfg)["results"].values()))
        maps = np.load(entry["maps"])
        assert maps.dtype == np.float32 and np.isfinite(maps).all()
