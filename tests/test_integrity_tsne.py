"""task=tsne cannot reuse stale features or draw from bad ones: images overwritten in place,
random-init seeds, a NaN layer after a healthy one, skipped corrupt files, odd file names,
a cache on another file system, two runs building one cache entry."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup_vis.features.cache import FeatureCacheEntry
from selfsup_vis.tasks.common import run_task
from selfsup_vis.utils.io import save_npy
from tests.conftest import compose_cfg

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none",
         "task.backend=pca", "task.projector=false", "dataset.num_workers=0"]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _image(path: Path, seed: int, size: int = 24) -> None:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _folder(root: Path, per_class: int = 4) -> Path:
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _image(root / c / f"{i}.png", hash((c, i)) % 1000)
    return root


def _tsne(compose_in, tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_in(["task=tsne", "model=mocov2_tiny", "task.layers=[layer4]", "task.overwrite=true",
                      f"task.cache_dir={tmp_path / 'cache'}", *QUIET, *overrides])  # each run replaces the last
    return run_task(cfg)


def _features(tmp_path: Path, layer: str = "layer4") -> np.ndarray:
    return np.load(tmp_path / "features" / f"{layer}.npy")


def test_images_overwritten_in_place_are_extracted_again(compose_in, tmp_path):
    root = _folder(tmp_path / "data")
    data = ["dataset=image_folder", f"dataset.root={root}"]
    first = _tsne(compose_in, tmp_path, *data)
    before = _features(tmp_path)
    assert first["timings"]["extraction_s"] > 0
    _image(root / "cat" / "0.png", seed=999)  # same path, new content
    os.utime(root / "cat" / "0.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    second = _tsne(compose_in, tmp_path, *data)
    after = _features(tmp_path)
    assert second["timings"]["extraction_s"] > 0, "stale features reused"
    assert not np.allclose(before[0], after[0]) and np.allclose(before[1:], after[1:], atol=1e-5)
    assert second["feature_cache"] != first["feature_cache"]


@pytest.mark.slow
def test_random_init_seed_is_part_of_the_key(compose_in, tmp_path):
    data = ["dataset.num_classes=2", "dataset.val_samples_per_class=4", "dataset.image_size=32"]
    a = _tsne(compose_in, tmp_path, *data, "seed=0")
    fa = _features(tmp_path)
    b = _tsne(compose_in, tmp_path, *data, "seed=1")
    fb = _features(tmp_path)
    assert b["timings"]["extraction_s"] > 0 and a["feature_cache"] != b["feature_cache"]
    assert not np.allclose(fa, fb)  # other random weights, other features
    c = _tsne(compose_in, tmp_path, *data, "seed=0")
    assert c["timings"]["extraction_s"] == 0.0 and np.array_equal(_features(tmp_path), fa)


def test_precision_is_part_of_the_key(compose_in, tmp_path):
    """bf16 features are other numbers than fp32 ones: never served from each other's entry."""
    data = ["dataset.num_classes=2", "dataset.val_samples_per_class=4", "dataset.image_size=32"]
    a = _tsne(compose_in, tmp_path, *data)
    fa = _features(tmp_path)
    b = _tsne(compose_in, tmp_path, *data, "trainer.precision=bf16-mixed")
    assert b["timings"]["extraction_s"] > 0 and a["feature_cache"] != b["feature_cache"]
    assert not np.array_equal(_features(tmp_path), fa) and np.allclose(_features(tmp_path), fa, rtol=0.1, atol=0.1)
    meta = json.loads((Path(b["feature_cache"]) / "meta.json").read_text())
    assert meta["compute"] == {"device": "cpu", "precision": "bf16-mixed", "decode": "cpu"}


def test_nan_in_a_later_layer_stops_before_any_plot(compose_in, tmp_path):
    from selfsup_vis.models import build_model

    model = build_model(compose_cfg(["model=mocov2_tiny"]).model)
    state = model.state_dict()
    state["backbone.layer4.0.conv1.weight"].fill_(float("nan"))
    torch.save({"state_dict": state}, tmp_path / "nan.ckpt")
    with pytest.raises(ValueError, match=r"layer 'layer4' of mocov2_tiny.*NaN or inf.*row indices"):
        _tsne(compose_in, tmp_path, "dataset.num_classes=2", "dataset.val_samples_per_class=4",
              "dataset.image_size=32", "task.layers=[layer2,layer4]", f"model.checkpoint={tmp_path / 'nan.ckpt'}")
    assert not list(tmp_path.glob("tsne_*")) and not list(tmp_path.glob("embedding_*"))


def test_skip_corrupt_drops_unreadable_files_and_lists_them(compose_in, tmp_path):
    root = _folder(tmp_path / "data")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    summary = _tsne(compose_in, tmp_path, "dataset=image_folder", f"dataset.root={root}",
                    "dataset.skip_corrupt=true")
    assert summary["n_samples"] == 8
    [skipped] = summary["skipped_corrupt"]
    assert skipped["name"] == "dog/broken.png" and "broken.png" in skipped["error"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["skipped_corrupt"][0]["name"] == "dog/broken.png"
    assert "dog/broken.png" not in (tmp_path / "paths.txt").read_text()


@pytest.mark.slow
def test_non_utf8_file_names_run_in_tsne_and_browse(compose_in, tmp_path):
    root = _folder(tmp_path / "data")
    odd = os.path.join(os.fsencode(root / "cat"), b"caf\xe9.png")
    _image(Path(os.fsdecode(odd)), 5)
    summary = _tsne(compose_in, tmp_path, "dataset=image_folder", f"dataset.root={root}")
    assert summary["n_samples"] == 9
    assert "cat/caf\\xe9.png" in (tmp_path / "paths.txt").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in (tmp_path / "embedding_layer4.csv").read_text(encoding="utf-8")
    browse = run_task(compose_cfg(["task=browse", "dataset=image_folder", f"dataset.root={root}",
                                   "task.n_samples=9", "logger=none"], tmp_path / "browse"))
    assert any(r["name"] == "cat/caf\\xe9.png" for r in browse["samples"])


def test_cache_on_another_file_system_is_copied_not_symlinked(compose_in, tmp_path, monkeypatch):
    def no_hard_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_hard_links)
    summary = _tsne(compose_in, tmp_path, "dataset.num_classes=2", "dataset.val_samples_per_class=4",
                    "dataset.image_size=32")
    run_file = tmp_path / "features" / "layer4.npy"
    assert run_file.is_file() and not run_file.is_symlink()
    expected = np.load(run_file).copy()
    import shutil

    shutil.rmtree(summary["feature_cache"])  # cleaning the cache keeps the run's features
    assert np.array_equal(np.load(run_file), expected)


def test_two_builders_of_one_entry_wait_for_each_other(tmp_path):
    """The second builder used to find the first one's half-written entry (no meta.json yet),
    delete it and crash the first one; with the entry lock it waits and reuses the result."""
    meta = {"model": "m", "n": 6}
    built, errors = [], []

    def builder(name: str) -> None:
        entry = FeatureCacheEntry(tmp_path / "cache", meta)
        try:
            with entry.lock():
                entry.validate(6)
                if entry.missing_layers(["l"]):
                    entry.features_dir.mkdir(parents=True, exist_ok=True)
                    save_npy(entry.layer_path("l"), np.ones((6, 3), np.float32))
                    time.sleep(0.5)  # extraction takes a while; meta.json comes last
                    entry.write_index(np.zeros(6), np.arange(6), [f"{i}.png" for i in range(6)])
                    built.append(name)
                entry.link_into(tmp_path / name, ["l"])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=builder, args=(f"run{i}",)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(built) == 1  # one built it, the other waited and reused it
    for i in range(2):
        assert np.load(tmp_path / f"run{i}" / "l.npy").shape == (6, 3)


def test_disk_full_in_the_cache_names_the_path_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    entry = FeatureCacheEntry(tmp_path / "cache", {"model": "m"})
    with pytest.raises(OSError, match=r"No space left on device while writing .*labels\.npy") as err:
        entry.write_index(np.zeros(3), np.arange(3), ["a", "b", "c"])
    assert err.value.errno == errno.ENOSPC
    assert [p.name for p in entry.dir.iterdir()] == []  # no hidden .labels.npy.*.tmp left


def test_disk_full_while_merging_features_is_enospc_not_sigbus(tmp_path, monkeypatch):
    """The merged array is memory-mapped; its blocks are reserved first, so a full disk is an
    error naming the file instead of a SIGBUS on the first write to a mapped page."""
    import json as _json

    from selfsup_vis.features.extraction import merge_shards

    rank = tmp_path / "shards" / "rank0"
    rank.mkdir(parents=True)
    np.arange(3, dtype=np.int64).tofile(rank / "positions.i64")
    np.ones((3, 2), np.float32).tofile(rank / "l.f32")
    (rank / "dims.json").write_text(_json.dumps({"l": 2}))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"No space left on device while writing .*out/l\.npy"):
        merge_shards(tmp_path / "shards", tmp_path / "out", ["l"], 3)
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    merge_shards(tmp_path / "shards", tmp_path / "out", ["l"], 3)
    assert np.array_equal(np.load(tmp_path / "out" / "l.npy"), np.ones((3, 2), np.float32))
