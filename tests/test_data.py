"""Synthetic data, folders, pipelines and masks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup_vis.data.base import CorruptImageError, collate_skip_none
from selfsup_vis.data.datamodule import ImageFolderDataModule, SyntheticDataModule
from selfsup_vis.data.folders import image_folder_dataset, imagenet_dataset, open_rgb
from selfsup_vis.data.masks import BlockwiseMaskGenerator, SimMIMMaskGenerator
from selfsup_vis.data.synthetic import SHAPES, SyntheticShapes
from selfsup_vis.data.transforms import build_pipeline


def test_synthetic_is_deterministic_and_seed_dependent():
    a = np.asarray(SyntheticShapes("train", samples_per_class=2, seed=0).load_image(3))
    b = np.asarray(SyntheticShapes("train", samples_per_class=2, seed=0).load_image(3))
    c = np.asarray(SyntheticShapes("train", samples_per_class=2, seed=1).load_image(3))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std() > 10  # a real picture, not a flat frame


def test_synthetic_splits_sizes_and_names():
    k = 5
    train = SyntheticShapes("train", num_classes=k, samples_per_class=3)
    assert len(train) == k * 3 and train.classes == SHAPES[:k]
    conflict = SyntheticShapes("conflict", num_classes=k, conflict_per_pair=2)
    assert len(conflict) == k * (k - 1) * 2
    for i in range(len(conflict)):
        shape, texture = conflict.labels[i], conflict.texture_label(i)
        assert shape != texture
        stem = conflict.names[i].split("/")[-1].removesuffix(".png")
        s, t = stem.split("-")
        assert s.rstrip("0123456789") == SHAPES[shape] and t.rstrip("0123456789") == SHAPES[texture]
        assert conflict.names[i].startswith(SHAPES[shape] + "/")
    assert len(set(conflict.names)) == len(conflict.names)
    # controls: silhouettes are (nearly) two-coloured, textures fill the frame
    sil = np.asarray(SyntheticShapes("shape_only", num_classes=k, samples_per_class=1).load_image(0))
    tex = np.asarray(SyntheticShapes("texture_only", num_classes=k, samples_per_class=1).load_image(0))
    assert sil.std() > 10 and tex.std() > 10


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes("nope")
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticShapes("train", num_classes=99)


def test_simmim_mask_generator_matches_reference_counts():
    gen = SimMIMMaskGenerator(192, 32, 4, 0.6)
    mask = gen(torch.Generator().manual_seed(0))
    assert mask.shape == (48, 48) and mask.dtype == torch.long
    # 36 blocks of 8x8 model patches, ceil(36 * 0.6) = 22 masked
    assert int(mask.sum()) == 22 * 64
    blocks = mask.view(6, 8, 6, 8).permute(0, 2, 1, 3).reshape(36, 64)
    assert set(blocks.float().mean(1).tolist()) <= {0.0, 1.0}
    same = gen(torch.Generator().manual_seed(0))
    assert torch.equal(mask, same)


def test_blockwise_mask_generator_maskfeat_defaults():
    gen = BlockwiseMaskGenerator(14, 78, 15)
    counts = [int(gen(torch.Generator().manual_seed(s)).sum()) for s in range(20)]
    assert all(c <= 78 for c in counts)
    assert np.mean(counts) > 70  # reaches (or nearly reaches) 78 like BEiT's generator


@pytest.mark.parametrize(
    "name,expect",
    [
        ("eval", {"image": (3, 64, 64)}),
        ("mae", {"image": (3, 64, 64)}),
        ("mocov2", {"views": [(3, 64, 64)] * 2}),
        ("multicrop", {"views": [(3, 64, 64)] * 2 + [(3, 27, 27)] * 6}),
        ("simmim", {"image": (3, 64, 64), "mask": (16, 16)}),
        ("maskfeat", {"image": (3, 64, 64), "mask": (4, 4)}),
    ],
)
def test_pipelines_output_shapes(name, expect):
    # the caller (the model family) gives the mask generator; data/ knows no model's mask rule
    masks = {"simmim": SimMIMMaskGenerator(64, 16, 4, 0.6), "maskfeat": BlockwiseMaskGenerator(4, 6, 6)}
    p = build_pipeline(name, 64, mask_generator=masks.get(name))
    out = p(SyntheticShapes("train", samples_per_class=1).load_image(0))
    for key, shape in expect.items():
        if key == "views":
            assert [tuple(v.shape) for v in out["views"]] == shape
        else:
            assert tuple(out[key].shape) == shape


def test_skip_type_really_skips_and_rejects_unknown():
    img = SyntheticShapes("train", samples_per_class=1).load_image(0)
    p = build_pipeline("mocov2", 64, skip=["ColorJitter", "RandomGrayscale", "GaussianBlur", "Normalize"])
    assert all("ColorJitter" not in v.step_names and "Normalize" not in v.step_names for v in p.views)
    out = p(img)
    assert out["views"][0].min() >= 0 and out["views"][0].max() <= 1  # not normalised
    # without any random step, eval with no crop reproduces the image exactly
    e = build_pipeline("eval", 64, skip=["Normalize"], crop_pct=None)
    assert torch.allclose(e(img)["image"], torch.from_numpy(np.array(img)).permute(2, 0, 1) / 255.0)
    with pytest.raises(ValueError, match="unknown transform 'Colorjitter'"):
        build_pipeline("mocov2", 64, skip=["Colorjitter"])
    with pytest.raises(ValueError, match="has no step GaussianBlur"):
        build_pipeline("mae", 64, skip=["GaussianBlur"])
    assert build_pipeline("simmim", 64, skip=["MaskGenerator"],
                          mask_generator=SimMIMMaskGenerator(64, 16, 4, 0.6)).mask_generator is None
    with pytest.raises(ValueError, match="has no step MaskGenerator"):  # no mask given: no step
        build_pipeline("simmim", 64, skip=["MaskGenerator"])


def test_data_never_imports_a_model():
    """The data pipeline gets its mask generator from the caller: no module of data/ names the
    models package, not even as a string for a deferred import (a hidden data -> models cycle)."""
    data_dir = Path(__file__).resolve().parents[1] / "selfsup_vis" / "data"
    assert [p.name for p in data_dir.rglob("*.py") if "selfsup_vis.models" in p.read_text()] == []


def _write_folder(root: Path, classes=("a", "b"), n=2, size=20) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder_dataset(tmp_path / "missing")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        image_folder_dataset(tmp_path / "empty_root")
    _write_folder(tmp_path / "r")
    (tmp_path / "r" / "zzz_empty").mkdir()
    with pytest.raises(FileNotFoundError, match="zzz_empty"):
        image_folder_dataset(tmp_path / "r")


def test_corrupt_image_error_or_skip(tmp_path, caplog):
    _write_folder(tmp_path)
    bad = tmp_path / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    ds = image_folder_dataset(tmp_path, build_pipeline("eval", 16))
    idx = ds.paths.index(bad)
    with pytest.raises(CorruptImageError, match="broken.png"):
        ds[idx]
    dm = ImageFolderDataModule(str(tmp_path), skip_corrupt=True, batch_size=8, eval_split="val")
    dm.configure(eval=build_pipeline("eval", 16))
    with caplog.at_level(logging.WARNING):
        batches = list(dm.predict_dataloader())
    assert sum(len(b["index"]) for b in batches) == 4  # 5 files, the broken one skipped
    assert "broken.png" in caplog.text
    assert collate_skip_none([None])["index"].numel() == 0


def test_image_modes_are_converted(tmp_path):
    arr16 = (np.linspace(0, 65535, 16 * 16).reshape(16, 16)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "g16.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "rgba.png")
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    g16 = open_rgb(tmp_path / "g16.png")
    assert g16.mode == "RGB" and np.asarray(g16).max() == 255 and np.asarray(g16).min() == 0
    assert open_rgb(tmp_path / "rgba.png").getpixel((0, 0)) == (255, 255, 255)  # transparent → white
    assert open_rgb(tmp_path / "gray.png").getpixel((0, 0)) == (128, 128, 128)


def test_imagenet_flat_folder_with_label_file(tmp_path):
    split = tmp_path / "val"
    split.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i, i, i)).save(split / f"ILSVRC2012_val_{i:08d}.JPEG")
    (tmp_path / "val.txt").write_text("".join(f"ILSVRC2012_val_{i:08d}.JPEG {i * 2}\n" for i in range(3)))
    ds = imagenet_dataset(tmp_path, "val", label_file=str(tmp_path / "val.txt"))
    assert ds.labels == [0, 2, 4] and len(ds.classes) == 5
    (tmp_path / "bad.txt").write_text("ILSVRC2012_val_99999999.JPEG 1\n")
    with pytest.raises(FileNotFoundError, match="line 1 names a missing image"):
        imagenet_dataset(tmp_path, "val", label_file=str(tmp_path / "bad.txt"))
    with pytest.raises(FileNotFoundError, match="label_file"):
        imagenet_dataset(tmp_path, "val")


def test_datamodule_loaders_yield_sample_dicts():
    dm = SyntheticDataModule(samples_per_class=2, val_samples_per_class=1, batch_size=4)
    dm.configure(train=build_pipeline("mocov2", 64), eval=build_pipeline("eval", 64, crop_pct=None))
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["views"]) == 2 and batch["views"][0].shape == (4, 3, 64, 64)
    pred = list(dm.predict_dataloader())
    assert sum(len(b["index"]) for b in pred) == 8
    assert set(pred[0]) == {"image", "label", "index", "name"}


def test_maskfeat_pipeline_and_reconstruction_draw_the_same_mask():
    """D1: one mask rule (the model's): 40 masked patches with min_num_patches=15 gives blocks
    of >= 15 patches in the training pipeline as in task=reconstruct / the callback."""
    from selfsup_vis.models import build_model, model_pipeline
    from selfsup_vis.reconstruction.masks import make_masks
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["model=maskfeat_tiny", "model.img_size=224", "model.patch_size=16",
                       "model.num_masking_patches=40", "model.min_num_patches=15"]).model
    pipe = model_pipeline(cfg)
    model = build_model(cfg)
    assert pipe.mask_generator.min_num_patches == model.mask_generator().min_num_patches == 15
    for seed in range(3):
        from_model = make_masks(model, 2, seed=seed)
        for i in range(2):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)  # make_masks' per-image seeding
            assert torch.equal(pipe.mask_generator(gen), from_model[i])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_dataloader_workers_never_exceed_the_usable_cpus(caplog):
    """With this process pinned to one CPU (as taskset or Slurm's --cpus-per-task would), 3
    requested workers become 1 in every loader, logged once; a request within the CPUs stays."""
    from selfsup_vis.data import datamodule

    pipe = build_pipeline("eval", 32, crop_pct=None)
    dm = SyntheticDataModule(num_classes=2, samples_per_class=2, val_samples_per_class=2, num_workers=3)
    dm.configure(train=pipe, eval=pipe)
    before = os.sched_getaffinity(0)
    datamodule._clamp_logged.clear()
    try:
        os.sched_setaffinity(0, {min(before)})
        assert datamodule.usable_cpus() == 1
        with caplog.at_level(logging.INFO, logger="selfsup_vis.data.datamodule"):
            loaders = [dm.train_dataloader(), dm.val_dataloader(), dm.predict_dataloader()]
        assert [ld.num_workers for ld in loaders] == [1, 1, 1]
        assert caplog.text.count("dataset.num_workers=3 but this process may use 1 CPU(s)") == 1
    finally:
        os.sched_setaffinity(0, before)
    assert datamodule.loader_workers(1) == 1 and datamodule.loader_workers(0) == 0
    assert datamodule.usable_cpus() == len(before)
