"""Bad values refused at start, naming the file and option (issue 24 item 5); collapsed
features flagged in the log, the summary and the figure."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from selfsup_vis.config.validate import ConfigError, validate
from selfsup_vis.embedding.plots import format_quality
from selfsup_vis.features.external import FeatureShards, load_labels
from tests.conftest import assert_ok, compose_cfg, run_main


def _features(path: Path, n: int = 40, d: int = 8, dtype=np.float32) -> Path:
    np.save(path, np.random.default_rng(0).normal(size=(n, d)).astype(dtype))
    return path


# ------------------------------------------------------------------ labels
def test_huge_label_id_in_npy_is_refused_at_once(tmp_path):
    labels = np.zeros(40, dtype=np.int64)
    labels[7] = 2**40
    np.save(tmp_path / "labels.npy", labels)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"task\.labels: .*labels\.npy row 7 holds label 1099511627776, above 1000000"):
        load_labels(tmp_path / "labels.npy", 40)
    assert time.perf_counter() - start < 2  # no class list of 2**40 names first


def test_huge_or_negative_label_in_csv_is_refused_naming_the_line(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("label\n" + "0\n" * 5 + f"{10**12}\n")
    with pytest.raises(ValueError, match=r"labels\.csv line 7: label 1000000000000 is above 1000000"):
        load_labels(csv, 6)
    csv.write_text("label\n0\n-3\n")
    with pytest.raises(ValueError, match=r"labels\.csv line 3: label -3 is negative"):
        load_labels(csv, 2)
    np.save(tmp_path / "neg.npy", np.array([0, 1, -1]))
    with pytest.raises(ValueError, match=r"neg\.npy holds negative labels \(-1 at row 2\)"):
        load_labels(tmp_path / "neg.npy", 3)


def test_labels_beyond_the_given_classes_are_refused(tmp_path):
    np.save(tmp_path / "l.npy", np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"task\.classes: 2 names but labels go up to 2"):
        load_labels(tmp_path / "l.npy", 3, classes=["a", "b"])


def test_empty_labels_csv_is_refused(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,class\n")
    with pytest.raises(ValueError, match=r"task\.labels: .*labels\.csv has a header \(path, label, class\) but no rows"):
        load_labels(csv, 3)


def test_object_labels_npy_is_refused_naming_the_file(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"task\.labels: .*obj\.npy holds Python objects"):
        load_labels(tmp_path / "obj.npy", 2)


def test_classes_without_labels_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"task\.classes is set but task\.labels is not"):
        load_labels(None, 3, classes=["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"task\.classes is set but task\.labels is not"):
        validate(compose_cfg(["task=tsne", f"task.features={tmp_path / 'f.npy'}", "task.classes=[a,b]"]))


# ------------------------------------------------------------------ shards
def test_truncated_shard_is_refused_from_its_header(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    _features(folder / "part_0.npy")
    cut = _features(folder / "part_1.npy")
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"task\.features: .*part_1\.npy is truncated: its header says shape \(40, 8\)"):
        FeatureShards(folder)
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(40, dtype=np.int64))
    labels.write_bytes(labels.read_bytes()[:-16])
    with pytest.raises(ValueError, match=r"task\.labels: .*labels\.npy is truncated"):
        load_labels(labels, 40)


def test_float64_beyond_float32_is_refused_naming_file_and_row(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 4))
    x[12, 3] = 1e300
    np.save(tmp_path / "big.npy", x)
    with pytest.raises(ValueError, match=r"big\.npy row 12 column 3 holds 1e\+300, beyond the float32 range"):
        FeatureShards(tmp_path / "big.npy")


# ------------------------------------------------------------------ config values
@pytest.mark.parametrize("overrides, message", [
    (["task=attention", "task.method=gradcam", "task.target_category=-2"], r"task\.target_category=-2: a class index must be >= 0"),
    (["task=attention", "model=classifier_tiny", "task.target_category=5000"], r"task\.target_category=5000: out of range, model\.num_classes="),
    (["task=attention", "task.device=gpu0"], r"task\.device='gpu0': unknown device"),
    (["task=tsne", "task.pca_dims=-5"], r"task\.pca_dims=-5: must be an integer >= 1"),
    (["task=tsne", "task.pca_dims=many"], r"task\.pca_dims='many'"),
    (["task=compare_embeddings", "task.layers=[layer3,layer4]", "task.panel_layer=layer9"],
     r"task\.panel_layer='layer9': not among the compared layers \['layer3', 'layer4'\]"),
    (["task=tsne", "task.features=/x/f.npy", "task.export=[atlas]"], r"task\.export=\['atlas'\]: needs the images"),
])
def test_bad_task_values_are_refused_at_start(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(overrides))


def test_good_task_values_pass():
    for overrides in (["task=attention", "task.device=cuda:1", "task.target_category=3"],
                      ["task=tsne", "task.pca_dims=null"], ["task=tsne", "task.pca_dims=50"],
                      ["task=compare_embeddings", "task.layers=[layer4]", "task.panel_layer=layer4"]):
        validate(compose_cfg(overrides))


def test_cli_refuses_bad_features_before_any_work(tmp_path):
    feats = _features(tmp_path / "f.npy")
    np.save(tmp_path / "labels.npy", np.array([0] * 39 + [2**40]))
    proc = run_main(["task=tsne", f"task.features={feats}", f"task.labels={tmp_path / 'labels.npy'}",
                     "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode != 0 and "labels.npy row 39 holds label 1099511627776" in proc.stderr
    proc = run_main(["task=tsne", f"task.features={feats}", "task.export=[atlas]", "logger=none",
                     f"hydra.run.dir={tmp_path / 'run2'}"], tmp_path)
    assert proc.returncode == 2 and "task.export=['atlas']" in proc.stderr
    assert not (tmp_path / "run2" / "f.npy").exists()


# ------------------------------------------------------------------ collapsed features
def test_collapsed_features_are_flagged_in_log_summary_and_figure(tmp_path):
    feats = tmp_path / "same.npy"
    noise = np.random.default_rng(0).normal(scale=1e-5, size=(40, 8))
    np.save(feats, (np.arange(1, 9) + noise).astype(np.float32))  # 40 (nearly) identical rows
    np.save(tmp_path / "labels.npy", np.arange(40) % 2)
    proc = run_main(["task=tsne", f"task.features={feats}", f"task.labels={tmp_path / 'labels.npy'}",
                     "task.perplexity=5", "task.backend=sklearn", "logger=none",
                     f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_ok(proc)
    log = "".join(p.read_text() for p in (tmp_path / "run").glob("*.log"))
    assert "collapsed features: all 40 rows are nearly identical" in log
    quality = json.loads((tmp_path / "run" / "summary.json").read_text())["layers"]["same"]["quality"]
    assert quality["collapsed"].startswith("collapsed features")
    assert format_quality(quality).startswith("COLLAPSED FEATURES")  # the text drawn on the figure
    # healthy features are not flagged
    ok = _features(tmp_path / "ok.npy")
    assert_ok(run_main(["task=tsne", f"task.features={ok}", "task.perplexity=5", "logger=none",
                        f"hydra.run.dir={tmp_path / 'ok'}"], tmp_path))
    assert "collapsed" not in json.loads((tmp_path / "ok" / "summary.json").read_text())["layers"]["ok"]["quality"]
