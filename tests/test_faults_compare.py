"""Compare entries keyed by content (issue 24 item 1, "Why" 2): each compared model has its own
folder, named by a hash of (name, model config, checkpoint) with the name kept for people, so
names that differ only in characters a folder name drops (``fx 1``, ``fx_1``, ``run/a``) never
share features (which made CKA 1.0, "identical"), and a comparison resumed after one
checkpoint changed extracts that model afresh (saying so) instead of mixing two checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import selfsup_vis.tasks.compare_embeddings as compare
from selfsup_vis.models import build_model
from tests.conftest import compose_cfg, run_inprocess

SMALL = ["task=compare_embeddings", "model=mocov2_tiny", "task.layers=[layer4]", "task.backend=pca",
         "task.max_num_class=2", "task.max_samples_per_class=6", "dataset.val_samples_per_class=6",
         "dataset.batch_size=6", "task.n_jobs=1", "task.cache=false", "logger=none",
         "trainer.enable_progress_bar=false"]


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save({"state_dict": build_model(compose_cfg(["model=mocov2_tiny"]).model).state_dict()}, path)
    return path


def _models(*entries: tuple[str, Path]) -> str:
    return "task.models=[" + ",".join(f"{{model: mocov2_tiny, checkpoint: '{c}', name: '{n}'}}"
                                      for n, c in entries) + "]"


def test_names_a_folder_name_cannot_tell_apart_get_their_own_features(tmp_path):
    cks = [_checkpoint(tmp_path / f"{i}.pt", i) for i in range(3)]
    names = ["fx 1", "fx_1", "run/a"]
    s = run_inprocess([*SMALL, _models(*zip(names, cks))], tmp_path / "run")
    folders = [m["folder"] for m in s["models"]]
    assert [m["name"] for m in s["models"]] == names and len(set(folders)) == 3
    feats = [np.load(tmp_path / "run" / "features" / f / "layer4.npy") for f in folders]
    assert not np.allclose(feats[0], feats[1])  # each its own checkpoint's features
    cka = next(v for v in s["cka"].values() if v["rows_model"] == "fx 1" and v["cols_model"] == "fx_1")
    assert cka["matrix"][0][0] < 0.999  # two different networks, not "identical"
    assert len(list((tmp_path / "run").glob("cka_*.csv"))) == 3  # one table per pair, none overwritten


@pytest.mark.slow
def test_resumed_comparison_extracts_a_changed_checkpoint_afresh(tmp_path, monkeypatch, caplog):
    a, b = _checkpoint(tmp_path / "a.pt", 1), _checkpoint(tmp_path / "b.pt", 2)
    overrides = [*SMALL, _models(("A", a), ("B", b))]

    def stop(*args, **kwargs):
        raise RuntimeError("job stopped after the extraction")

    monkeypatch.setattr(compare, "_cka", stop)
    with pytest.raises(RuntimeError, match="job stopped"):
        run_inprocess(overrides, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"
    monkeypatch.undo()
    _checkpoint(b, 3)  # B's checkpoint replaced in place (same path, other weights)
    with caplog.at_level("WARNING"):
        s = run_inprocess(overrides, tmp_path / "run")  # an unfinished run: resumed, not refused
    assert "'B' now has another model config or checkpoint" in caplog.text
    assert "'A' now has" not in caplog.text
    ref = run_inprocess(overrides, tmp_path / "ref")  # uninterrupted, under the new checkpoint
    for got, want in zip(s["models"], ref["models"]):
        assert got["folder"] == want["folder"]
        np.testing.assert_array_equal(np.load(tmp_path / "run" / "features" / got["folder"] / "layer4.npy"),
                                      np.load(tmp_path / "ref" / "features" / want["folder"] / "layer4.npy"))
    assert s["cka"] == ref["cka"]
