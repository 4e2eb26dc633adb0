"""task=tsne: subset selection, feature cache, end to end on the synthetic data, DDP-exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selfsup_vis.features.cache import FeatureCacheEntry
from selfsup_vis.features.subset import select_indices as select_subset
from tests.conftest import assert_ok, run_cli, run_main


def test_select_subset_classes_and_sampling():
    labels = np.repeat(np.arange(5), 10)
    idx = select_subset(labels, 5, 3, None, 4, "first", 0)
    assert idx.tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]
    a = select_subset(labels, 5, None, [4, 1], 3, "random", 7)
    b = select_subset(labels, 5, None, [4, 1], 3, "random", 7)
    assert np.array_equal(a, b) and set(labels[a]) == {1, 4} and a.size == 6
    assert not np.array_equal(a, select_subset(labels, 5, None, [4, 1], 3, "random", 8))
    with pytest.raises(ValueError, match=r"class_idx \[7\] out of range: the dataset has 5 classes"):
        select_subset(labels, 5, None, [1, 7], None, "random", 0)


def test_cache_entry_with_foreign_meta_is_rebuilt(tmp_path, caplog):
    entry = FeatureCacheEntry(tmp_path, {"model": "m", "n": 3})
    entry.write_index(np.zeros(3), np.arange(3), ["a", "b", "c"])
    entry.features_dir.mkdir()
    np.save(entry.layer_path("layer4"), np.zeros((3, 2), np.float32))
    assert entry.missing_layers(["layer4", "neck"]) == ["neck"]
    (entry.dir / "meta.json").write_text(json.dumps({"model": "other"}))
    entry.validate(3)
    assert "does not match" in caplog.text and not entry.dir.exists()


def _tsne(tmp_path: Path, out: str, *extra: str, env_cache: Path | None = None, runner=run_main):
    return runner(
        ["task=tsne", "model=mocov2_tiny", "task.max_samples_per_class=12", f"hydra.run.dir={tmp_path / out}", *extra],
        tmp_path,
        env={"SELFSUP_VIS_CACHE": str(env_cache or tmp_path / "cache")},
    )


@pytest.mark.slow
def test_tsne_end_to_end_cache_and_replot(tmp_path):
    proc = _tsne(tmp_path, "a", "task.layers=[layer2,layer4,neck]", "logger=many")
    assert_ok(proc)
    out = tmp_path / "a"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 8 * 12
    assert [r["layer"] for r in summary["ranking"]] and set(summary["layers"]) == {"layer2", "layer4", "neck"}
    for layer, info in summary["layers"].items():
        q = info["quality"]
        for key in ("knn_feat@10", "knn_feat@20", "knn_2d@10", "knn_2d@20", "trustworthiness", "silhouette_2d"):
            assert np.isfinite(q[key]), (layer, key)
        coords = np.load(out / f"embedding_{layer}.npy")
        assert coords.shape == (96, 2) and np.isfinite(coords).all()
        assert np.load(out / "features" / f"{layer}.npy").shape[0] == 96
        assert (out / f"tsne_{layer}.png").stat().st_size > 10_000
        assert (out / f"embedding_{layer}.csv").read_text().startswith("path,label,class,x,y")
    assert (out / "tsne_grid.png").is_file() and len((out / "paths.txt").read_text().splitlines()) == 96
    assert np.load(out / "labels.npy").shape == (96,)
    cache_dirs = [d for d in (tmp_path / "cache" / "features").iterdir() if d.is_dir()]  # + <entry>.lock
    assert len(cache_dirs) == 1 and (cache_dirs[0] / "meta.json").is_file()
    assert list((out / "tensorboard").glob("**/projector_config.pbtxt"))

    # another perplexity: features come from the cache, nothing is extracted
    proc = _tsne(tmp_path, "b", "task.layers=[layer4]", "task.perplexity=10", "task.backend=sklearn")
    assert_ok(proc)
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert b["timings"]["extraction_s"] == 0.0 and "reused from the cache" in proc.stdout + proc.stderr
    assert np.array_equal(np.load(tmp_path / "b" / "features" / "layer4.npy"), np.load(out / "features" / "layer4.npy"))

    # replot: same coordinates, new figures, no model
    proc = run_main(["task=tsne", "task.replot=true", f"task.from_dir={out}", f"hydra.run.dir={tmp_path / 'c'}"], tmp_path)
    assert_ok(proc)
    assert (tmp_path / "c" / "tsne_neck.png").is_file()


def test_tsne_bad_layer_lists_valid_names(tmp_path):
    proc = _tsne(tmp_path, "x", "task.layers=[layer9]")
    assert proc.returncode != 0
    assert "unknown layer 'layer9'" in proc.stderr and "layer4" in proc.stderr and "neck" in proc.stderr


@pytest.mark.ddp
def test_tsne_ddp_features_equal_single_process(tmp_path):
    """2-process gloo DDP on CPU: the merged features equal a 1-process run, no sample lost or doubled."""
    common = ["task.layers=[layer3,neck]", "task.max_num_class=5", "task.max_samples_per_class=7",
              "task.cache=false", "task.backend=pca", "task.projector=false", "dataset.batch_size=4"]
    assert_ok(_tsne(tmp_path, "single", *common))
    # a subprocess: Lightning's DDP launcher starts rank 1 by re-running this command line
    ddp = _tsne(tmp_path, "ddp", *common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", runner=run_cli)
    assert_ok(ddp)
    for layer in ("layer3", "neck"):
        one = np.load(tmp_path / "single" / "features" / f"{layer}.npy")
        two = np.load(tmp_path / "ddp" / "features" / f"{layer}.npy")
        assert one.shape == two.shape == (35, one.shape[1])
        np.testing.assert_allclose(one, two, atol=1e-5, rtol=0)
    assert np.array_equal(np.load(tmp_path / "single" / "labels.npy"), np.load(tmp_path / "ddp" / "labels.npy"))
    assert (tmp_path / "single" / "paths.txt").read_text() == (tmp_path / "ddp" / "paths.txt").read_text()


def test_final_norm_on_blocks_matches_the_norm_layer():
    import torch

    from selfsup_vis.models import build_model
    from tests.conftest import compose_cfg

    model = build_model(compose_cfg(["model=mae_tiny"]).model).eval()
    x = torch.randn(3, 3, 64, 64)
    last = f"block{len(model.encoder.blocks) - 1}"
    plain = model.extract_features(x, [last, "norm"])
    normed_model = build_model(compose_cfg(["model=mae_tiny"]).model, final_norm_blocks=True).eval()
    normed_model.load_state_dict(model.state_dict())
    normed = normed_model.extract_features(x, [last])[last]
    torch.testing.assert_close(normed, plain["norm"])
    assert not torch.allclose(normed, plain[last])
    with pytest.raises(ValueError, match="has no final norm"):
        build_model(compose_cfg(["model=mocov2_tiny"]).model, final_norm_blocks=True)


def test_nan_features_are_named_and_nothing_is_plotted(tmp_path):
    import torch

    from selfsup_vis.models import build_model
    from tests.conftest import compose_cfg

    model = build_model(compose_cfg(["model=mocov2_tiny"]).model)
    state = model.state_dict()
    state["backbone.layer4.0.conv1.weight"].fill_(float("nan"))
    torch.save({"state_dict": state}, tmp_path / "nan.ckpt")
    proc = _tsne(tmp_path, "nan", "task.layers=[layer4]", f"model.checkpoint={tmp_path / 'nan.ckpt'}")
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "layer 'layer4' of mocov2_tiny" in err and "NaN or inf" in err and "row indices" in err
    assert not list((tmp_path / "nan").glob("tsne_*.png"))
