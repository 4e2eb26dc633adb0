"""Resume keyed by content (issue 24 item 1): a tsne job stopped mid-extraction and rerun in its
run directory with another checkpoint, a replaced image or another seed discards the old
chunks (saying why) and ends with the features of an uninterrupted run under the new settings;
rerun unchanged, it reuses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup_vis.features.extraction as extraction
from selfsup_vis.models import build_model
from tests.conftest import assert_ok, compose_cfg, run_main

LAYER = "layer4"


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save({"state_dict": build_model(compose_cfg(["model=mocov2_tiny"]).model).state_dict()}, path)
    return path


class _Stop(RuntimeError):
    pass


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 samples (batches of 2); ``stop_after(n)`` makes the next extraction die
    after n batches, like a job killed mid-extraction."""
    monkeypatch.setattr(extraction, "CHUNK_SIZE", 4)
    real = extraction.FeatureShardWriter.write_on_batch_end
    state = {"left": None, "batches": 0}

    def write(self, *args, **kwargs):
        state["batches"] += 1
        if state["left"] is not None:
            if state["left"] == 0:
                state["left"] = None
                raise _Stop("job stopped mid-extraction")
            state["left"] -= 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(extraction.FeatureShardWriter, "write_on_batch_end", write)

    def stop_after(n: int) -> None:
        state["left"] = n

    stop_after.state = state
    return stop_after


def _tsne(tmp_path: Path, run: str, cache: str, data: Path, *extra: str):
    return run_main(
        ["task=tsne", "model=mocov2_tiny", "dataset=image_folder", f"dataset.root={data}",
         "dataset.batch_size=2", f"task.layers=[{LAYER}]", "task.perplexity=3", "logger=none",
         f"hydra.run.dir={tmp_path / run}", *extra],
        tmp_path, env={"SELFSUP_VIS_CACHE": str(tmp_path / cache)})


def _features(tmp_path: Path, run: str) -> np.ndarray:
    return np.load(tmp_path / run / "features" / f"{LAYER}.npy")


def _stopped_then_resumed(tmp_path, small_chunks, data, old: list[str], new: list[str], change=None):
    """Run under ``old`` stopped in its second chunk, apply ``change``, rerun in the same dir
    under ``new``; returns (resumed features, reference features, log of the resumed run)."""
    small_chunks(3)  # chunk 0 (2 batches) complete, stopped in chunk 1
    proc = _tsne(tmp_path, "run", "cache", data, *old)
    assert proc.returncode == 1 and "job stopped mid-extraction" in proc.stderr
    assert list((tmp_path / "run" / "_extract").glob("*/00000/complete"))  # chunk 0 is on disk
    if change is not None:
        change()
    proc = _tsne(tmp_path, "run", "cache", data, *new)
    assert_ok(proc)
    log = "\n".join(p.read_text() for p in (tmp_path / "run").glob("*.log"))
    assert_ok(_tsne(tmp_path, "ref", "ref_cache", data, *new))  # uninterrupted, own cache
    return _features(tmp_path, "run"), _features(tmp_path, "ref"), log + proc.stderr + proc.stdout


def test_resume_with_another_checkpoint_discards_the_old_rows(tmp_path, small_chunks):
    data = _folder(tmp_path / "data")
    a, b = _checkpoint(tmp_path / "a.pt", 1), _checkpoint(tmp_path / "b.pt", 2)
    got, want, log = _stopped_then_resumed(tmp_path, small_chunks, data,
                                           [f"model.checkpoint={a}"], [f"model.checkpoint={b}"])
    np.testing.assert_array_equal(got, want)
    assert "discarding the partly extracted features" in log and "checkpoint_sha256" in log


@pytest.mark.slow
def test_resume_after_an_image_was_replaced_discards_the_old_rows(tmp_path, small_chunks):
    data = _folder(tmp_path / "data")

    def replace_image() -> None:  # an image of the completed chunk 0 is replaced
        Image.fromarray(np.full((36, 36, 3), 200, dtype=np.uint8)).save(data / "a" / "0.png")

    got, want, log = _stopped_then_resumed(tmp_path, small_chunks, data, [], [], replace_image)
    np.testing.assert_array_equal(got, want)
    assert "discarding" in log and "image_files" in log


@pytest.mark.slow
def test_resume_with_another_seed_discards_the_old_rows(tmp_path, small_chunks):
    data = _folder(tmp_path / "data")  # no checkpoint: random weights depend on the seed
    got, want, log = _stopped_then_resumed(tmp_path, small_chunks, data, ["seed=1"], ["seed=2"])
    np.testing.assert_array_equal(got, want)
    assert "discarding" in log and "init_seed" in log


@pytest.mark.slow
def test_unchanged_rerun_reuses_the_completed_chunks(tmp_path, small_chunks):
    data = _folder(tmp_path / "data")
    small_chunks(3)
    assert _tsne(tmp_path, "run", "cache", data).returncode == 1
    before = small_chunks.state["batches"]
    assert_ok(_tsne(tmp_path, "run", "cache", data))
    assert small_chunks.state["batches"] - before == 4  # chunks 1 and 2 only (2 batches each)
    assert_ok(_tsne(tmp_path, "ref", "ref_cache", data))
    np.testing.assert_array_equal(_features(tmp_path, "run"), _features(tmp_path, "ref"))
