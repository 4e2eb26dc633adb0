"""task=reconstruct: masks (seeded, ratio, given), HOG strokes, end to end for MAE / SimMIM /
MaskFeat through the CLI, and the bad-input cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup_vis.data.base import CorruptImageError
from selfsup_vis.models.hog import HOGGenerator
from selfsup_vis.reconstruction.masks import load_mask_file, make_masks
from selfsup_vis.reconstruction.plots import hog_scale, hog_segments
from tests.conftest import assert_ok, compose_cfg, run_main


@pytest.fixture(scope="module")
def tiny_models():
    from selfsup_vis.models import build_model

    out = {}
    for name in ("mae_tiny", "simmim_tiny", "maskfeat_tiny"):
        torch.manual_seed(0)
        out[name] = build_model(compose_cfg([f"model={name}"]).model).eval()
    return out


def test_masks_reproducible_ratio_and_per_image(tiny_models):
    mae = tiny_models["mae_tiny"]
    a, b, c = make_masks(mae, 3, seed=0), make_masks(mae, 3, seed=0), make_masks(mae, 3, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 8, 8) and (a.flatten(1).sum(1) == 48).all()  # 75 % of 64
    assert torch.equal(make_masks(mae, 1, seed=0, start=2)[0], a[2])  # independent of other images
    assert (make_masks(mae, 2, seed=0, mask_ratio=0.5).flatten(1).sum(1) == 32).all()
    sim = make_masks(tiny_models["simmim_tiny"], 2, seed=0)
    assert sim.shape == (2, 16, 16) and abs(sim.float().mean().item() - 10 / 16) < 1e-6  # ceil(16*0.6)
    mf = make_masks(tiny_models["maskfeat_tiny"], 2, seed=0)
    assert mf.shape == (2, 8, 8) and 0 < mf.sum() <= 2 * 26


def test_load_mask_file_shapes_and_errors(tmp_path):
    coarse = np.array([[1, 0], [0, 1]], dtype=np.int64)
    np.save(tmp_path / "c.npy", coarse)
    m = load_mask_file(tmp_path / "c.npy", 3, 8)
    assert m.shape == (3, 8, 8) and m[:, :4, :4].all() and not m[:, :4, 4:].any()
    fine = np.kron(coarse, np.ones((32, 32), dtype=np.int64))  # 64x64 pixels on an 8x8 grid
    np.save(tmp_path / "f.npy", fine)
    assert torch.equal(load_mask_file(tmp_path / "f.npy", 1, 8)[0], m[0])
    np.save(tmp_path / "bad.npy", np.full((5, 5), 2))
    with pytest.raises(ValueError, match=r"bad\.npy must hold only 0"):
        load_mask_file(tmp_path / "bad.npy", 1, 8)
    np.save(tmp_path / "odd.npy", np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"odd\.npy is 3x3; the model's patch grid is 8x8"):
        load_mask_file(tmp_path / "odd.npy", 1, 8)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_mask_file(tmp_path / "missing.npy", 1, 8)


def test_hog_strokes_run_along_edges():
    """Vertical stripes -> horizontal gradients -> vertical strokes (perpendicular)."""
    x = torch.zeros(1, 3, 32, 32)
    x[..., ::4] = 1.0
    x[..., 1::4] = 1.0
    cells = HOGGenerator(9, 8, 16, tokens_per_side=2).cells(x)[0].mean(0).numpy()  # (9, 4, 4)
    segs, strength = hog_segments(cells, 8, hog_scale(cells))
    d = segs[:, 1] - segs[:, 0]
    strongest = d[np.argmax(strength)]
    assert abs(strongest[0]) < 0.2 * abs(strongest[1])  # dx ~ 0: vertical stroke
    assert (np.hypot(d[:, 0], d[:, 1]) <= 8).all()  # never longer than a cell
    # horizontal stripes -> horizontal strokes
    cells_h = HOGGenerator(9, 8, 16, tokens_per_side=2).cells(x.transpose(2, 3))[0].mean(0).numpy()
    segs_h, strength_h = hog_segments(cells_h, 8, hog_scale(cells_h))
    dh = (segs_h[:, 1] - segs_h[:, 0])[np.argmax(strength_h)]
    assert abs(dh[1]) < 0.2 * abs(dh[0])


def _write_inputs(tmp_path: Path) -> list[Path]:
    tmp_path.mkdir()
    rng = np.random.default_rng(0)
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 255, (50, 37), dtype=np.uint8), "L").save(gray)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(rng.integers(0, 255, (70, 90, 4), dtype=np.uint8), "RGBA").save(rgba)
    deep = tmp_path / "deep16.png"
    Image.fromarray(rng.integers(0, 65535, (64, 64), dtype=np.uint16)).save(deep)
    return [gray, rgba, deep]


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _check_outputs(out: Path, n: int, kind: str) -> dict:
    s = _summary(out)
    assert len(s["images"]) == n and s["error_kind"] == kind
    for rec in s["images"]:
        assert math.isfinite(rec["masked_error"]) and rec["masked_error"] > 0
        png = Path(rec["files"][0])
        assert png.is_file() and png.stat().st_size > 5_000
        assert np.asarray(Image.open(png).convert("L")).std() > 10  # not a blank canvas
    assert (out / "reconstruction_grid.png").stat().st_size > 10_000
    assert list((out / "csv").glob("**/images/reconstruct_grid_step000000.png"))
    return s


@pytest.mark.slow
def test_reconstruct_mae_files_converted_and_seeded(tmp_path, tiny_models):
    files = _write_inputs(tmp_path / "in")
    out = tmp_path / "mae"
    proc = run_main(["task=reconstruct", "model=mae_tiny", f"task.images=[{files[0]},{tmp_path / 'in'}]",
                    "task.max_images=4", "task.seed=3", f"hydra.run.dir={out}"], tmp_path)
    assert_ok(proc)
    log = proc.stdout + proc.stderr
    # gray.png, then the folder sorted: deep16.png, gray.png, rgba.png (max_images=4)
    assert "gray.png: L image converted to RGB" in log and "rgba.png: RGBA image converted" in log
    assert "deep16.png: I;16 image converted" in log and "37x50 resized to 64x64" in log and "not divisible by the patch size 8" in log
    s = _check_outputs(out, 4, "norm_pix_mse")
    arrays = np.load(out / "reconstructions.npz")
    assert arrays["mask"].shape == (4, 8, 8) and arrays["reconstruction"].shape == (4, 64, 64, 3)
    # the mask the model used is exactly the seeded one
    assert np.array_equal(arrays["mask"], make_masks(tiny_models["mae_tiny"], 4, seed=3).numpy())
    assert s["images"][0]["mask_ratio"] == 0.75
    # default display: no hidden statistics, said in summary.json; errors in the target space, PSNR shown
    assert s["display"]["mode"] == "visible" and not s["display"]["uses_hidden_statistics"]
    assert "nearest visible patches" in s["display"]["rule"] and s["mask"]["fill"] == [0.485, 0.456, 0.406]
    assert all(math.isfinite(r["psnr_db"]) and r["error_space"].startswith("target") for r in s["images"])
    assert set(s["by_display"]) == {"visible", "original", "normalized"}


@pytest.mark.slow
def test_reconstruct_simmim_dataset_default_and_nonnormpix_mae(tmp_path):
    out = tmp_path / "simmim"
    assert_ok(run_main(["task=reconstruct", "model=simmim_tiny", "task.max_images=3", f"hydra.run.dir={out}"],
                      tmp_path))
    s = _check_outputs(out, 3, "pixel_mse")
    assert np.load(out / "reconstructions.npz")["mask"].shape == (3, 16, 16)
    assert s["images"][0]["display_mse"] is not None and math.isfinite(s["mean_psnr_db"])
    assert not s["display"]["norm_pix"] and "nothing to de-normalise" in s["display"]["rule"]
    out = tmp_path / "mae_raw"
    assert_ok(run_main(["task=reconstruct", "model=mae_tiny", "model.norm_pix=false", "task.max_images=2",
                       "task.mask_ratio=0.5", f"hydra.run.dir={out}"], tmp_path))
    s = _check_outputs(out, 2, "pixel_mse")
    assert not s["norm_pix"] and all(r["mask_ratio"] == 0.5 for r in s["images"])


@pytest.mark.slow
def test_reconstruct_maskfeat_given_mask_and_hog_row(tmp_path):
    mask = np.zeros((2, 8, 8), dtype=np.int64)
    mask[0, :4] = 1
    mask[1, :, 2:5] = 1
    np.save(tmp_path / "m.npy", mask)
    out = tmp_path / "maskfeat"
    assert_ok(run_main(["task=reconstruct", "model=maskfeat_tiny", "task.max_images=2",
                       f"task.mask={tmp_path / 'm.npy'}", f"hydra.run.dir={out}"], tmp_path))
    _check_outputs(out, 2, "hog_mse")
    arrays = np.load(out / "reconstructions.npz")
    assert np.array_equal(arrays["mask"], mask)
    assert arrays["pred_cells"].shape == arrays["target_cells"].shape == (2, 3, 9, 8, 8)


# ----------------------------------------------------------------------------- bad input
def _run_inprocess(compose_in, overrides):
    from selfsup_vis.tasks.common import run_task

    return run_task(compose_in(["task=reconstruct", *overrides]))


def test_unreadable_image_names_the_file(tmp_path, compose_in):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        _run_inprocess(compose_in, ["model=mae_tiny", f"task.images={bad}"])
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        _run_inprocess(compose_in, ["model=mae_tiny", f"task.images={tmp_path / 'nowhere.png'}"])


def test_mae_mask_file_with_uneven_counts_names_the_file(tmp_path, compose_in):
    mask = np.zeros((2, 8, 8), dtype=np.int64)
    mask[0, :6] = 1
    mask[1, :5] = 1
    np.save(tmp_path / "uneven.npy", mask)
    with pytest.raises(ValueError, match=r"task.mask=.*uneven.npy: .*same number of patches"):
        _run_inprocess(compose_in, ["model=mae_tiny", "task.max_images=2", f"task.mask={tmp_path / 'uneven.npy'}"])


def test_bad_display_settings_are_refused_before_work(compose_in):
    with pytest.raises(Exception, match="hidden"):  # an enum: refused at compose time, naming the value
        _run_inprocess(compose_in, ["model=mae_tiny", "task.display=hidden"])
    with pytest.raises(ValueError, match=r"mask_fill=\[0.5, 0.5\]"):
        _run_inprocess(compose_in, ["model=mae_tiny", "task.mask_fill=[0.5,0.5]"])


def test_non_mim_model_and_checkpoint_are_refused(tmp_path, compose_in):
    with pytest.raises(ValueError, match="needs a masked-image model.*mocov2_tiny"):
        _run_inprocess(compose_in, ["model=mocov2_tiny"])
    from selfsup_vis.checkpoints.loading import CheckpointError
    from selfsup_vis.models import build_model

    moco = build_model(compose_cfg(["model=mocov2_tiny"]).model)
    ckpt = tmp_path / "moco.pth"
    torch.save({"state_dict": moco.state_dict()}, ckpt)
    with pytest.raises(CheckpointError, match="moco.pth"):
        _run_inprocess(compose_in, ["model=mae_tiny", f"model.checkpoint={ckpt}"])
