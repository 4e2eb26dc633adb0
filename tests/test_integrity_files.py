"""Files that used to crash without a usable message or load silently wrong: checkpoints that
are not checkpoints, DDP-prefixed state dicts, decompression bombs, EXIF rotation, float
TIFFs, dangling symlinks, unreadable folders, a full disk under the run directory."""

from __future__ import annotations

import builtins
import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup_vis.checkpoints.loading import CheckpointError, safe_load
from selfsup_vis.data.base import CorruptImageError
from selfsup_vis.data.folders import image_folder_dataset, open_rgb, unreadable_images
from selfsup_vis.utils.io import write_json


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("content,what", [
    (b"", r"\(0 bytes\): it is an empty file"),
    (bytes(range(7, 250)) * 4, r"unrecognised binary data, not a PyTorch checkpoint.*starts with b'\\x07"),
    (b"<!DOCTYPE html><html>Sign in</html>", r"an HTML page, not a PyTorch checkpoint.*Sign in"),
])
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path, content, what):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=what) as err:
        safe_load(path)
    assert "weights_only" not in str(err.value) and "pickled Python objects" not in str(err.value)


def test_module_prefixed_state_dict_is_stripped(tmp_path, caplog):
    from selfsup_vis.models import build_model
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["model=mocov2_tiny"]).model
    source = build_model(cfg)
    torch.manual_seed(123)  # the model to load into starts from other random weights
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "ddp.pth")
    with caplog.at_level(logging.INFO):
        model = build_model(compose_cfg(["model=mocov2_tiny", f"model.checkpoint={tmp_path / 'ddp.pth'}"]).model)
    assert "stripped the 'module.' prefix" in caplog.text
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


# ------------------------------------------------------------------------------ images
def test_decompression_bomb_is_a_corrupt_image_and_skippable(tmp_path, monkeypatch):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "small.png")
    Image.new("L", (100, 100)).save(tmp_path / "a" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10000 px > 2x the limit
    with pytest.raises(CorruptImageError, match=r"bomb\.png.*decompression bomb.*MAX_IMAGE_PIXELS"):
        open_rgb(tmp_path / "a" / "bomb.png")
    ds = image_folder_dataset(tmp_path, skip_corrupt=True)
    bomb = ds.names.index("a/bomb.png")
    assert ds[bomb] is None  # skipped like any corrupt file
    assert [b["name"] for b in unreadable_images(ds, range(len(ds)))] == ["a/bomb.png"]


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    im = open_rgb(tmp_path / "rot.jpg")
    assert im.size == (20, 40)  # upright: portrait
    top = np.asarray(im)[:10].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 60  # the red half is now on top


def test_float_tiffs_are_scaled_or_refused(tmp_path):
    Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(tmp_path / "unit.tif")
    assert open_rgb(tmp_path / "unit.tif").getpixel((0, 0)) == (128, 128, 128)  # was (0, 0, 0)
    Image.fromarray(np.full((8, 8), 200.0, np.float32), "F").save(tmp_path / "byte.tif")
    assert open_rgb(tmp_path / "byte.tif").getpixel((0, 0)) == (200, 200, 200)
    Image.fromarray(np.linspace(-3, 1e4, 64, dtype=np.float32).reshape(8, 8), "F").save(tmp_path / "hdr.tif")
    with pytest.raises(CorruptImageError, match=r"hdr\.tif: float image .* no defined display range"):
        open_rgb(tmp_path / "hdr.tif")
    arr = np.full((8, 8), np.nan, np.float32)
    Image.fromarray(arr, "F").save(tmp_path / "nan.tif")
    with pytest.raises(CorruptImageError, match=r"nan\.tif.*NaN"):
        open_rgb(tmp_path / "nan.tif")
    Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(tmp_path / "g16.tif")
    assert open_rgb(tmp_path / "g16.tif").getpixel((0, 0)) == (117, 117, 117)  # 30000/65535


def test_dangling_symlinks_are_named_in_a_warning(tmp_path, caplog):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "x.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "a" / "dead.png")
    with caplog.at_level(logging.WARNING):
        ds = image_folder_dataset(tmp_path)
    assert len(ds) == 2 and "dangling symlink" in caplog.text and "dead.png" in caplog.text


def test_unreadable_class_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    for c in ("a", "b"):
        (tmp_path / c / "sub").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / c / "x.png")
    locked = str(tmp_path / "b" / "sub")
    real = os.scandir

    def scandir(path="."):  # what a chmod 000 folder does to a non-root user
        if os.fspath(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", locked)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError, match=r"cannot list 1 folder.*b/sub \(Permission denied\)"):
        image_folder_dataset(tmp_path)


def test_disk_full_under_the_run_dir_names_the_path(tmp_path, monkeypatch):
    real_open = open

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode and Path(file).name.startswith(".summary.json."):
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(OSError, match=r"No space left on device while writing .*run/summary\.json"):
        write_json(tmp_path / "run" / "summary.json", {"a": 1})
    monkeypatch.undo()
    assert list((tmp_path / "run").iterdir()) == []  # no hidden temp file
