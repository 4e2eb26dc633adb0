"""Checkpoint formats by content (issue 24 item 9): valid ``.safetensors`` load with the same key
maps as ``.pth``; a zip checkpoint named ``.safetensors`` loads by content; truncated or foreign
files are refused naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from selfsup_vis.checkpoints import CheckpointError, rules, save_checkpoint
from selfsup_vis.checkpoints.loading import export_state_dict
from tests.test_checkpoints import _randomize, _tiny


def _official_mae(tmp_path: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    a = _tiny("mae")
    _randomize(a)
    return a, {k: v.contiguous().clone() for k, v in export_state_dict(a, rules.official_mae()).items()}


def test_safetensors_round_trip_uses_the_same_key_maps(tmp_path: Path) -> None:
    a, official = _official_mae(tmp_path)
    path = tmp_path / "mae_official.safetensors"
    save_file(official, str(path))
    b = _tiny("mae")
    rep = b.load_weights(str(path))
    assert rep.layout == "official MAE / timm ViT" and not rep.missing and not rep.unexpected
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


def test_reader_is_picked_by_content_not_extension(tmp_path: Path) -> None:
    a, official = _official_mae(tmp_path)
    zip_named_st = save_checkpoint({"model": official}, tmp_path / "really_a_zip.safetensors")
    b = _tiny("mae")
    assert b.load_weights(str(zip_named_st)).layout == "official MAE / timm ViT"
    st_named_pth = tmp_path / "really_safetensors.pth"
    save_file(official, str(st_named_pth))
    c = _tiny("mae")
    c.load_weights(str(st_named_pth))
    assert all(torch.equal(c.state_dict()[k], v) for k, v in a.state_dict().items())


def test_truncated_or_foreign_safetensors_is_refused_naming_the_file(tmp_path: Path) -> None:
    _, official = _official_mae(tmp_path)
    good = tmp_path / "good.safetensors"
    save_file(official, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*header describes \d+ bytes, the file has"):
        _tiny("mae").load_weights(str(cut))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.safetensors.*not a PyTorch checkpoint"):
        _tiny("mae").load_weights(str(junk))
