"""task=shape_bias end to end: the real cue-conflict images with a random timm classifier,
and the synthetic property test (shape-trained > texture-trained shape bias)."""

from __future__ import annotations

import json
import shutil

import pytest

from selfsup_vis.data.cue_conflict import CueConflictLayoutError
from selfsup_vis.data.cue_conflict_categories import CATEGORIES
from selfsup_vis.shape_bias.analysis import provenance_sidecar, read_csv, shape_bias_stats
from selfsup_vis.shape_bias.report import plot_from_csvs
from tests.conftest import DATA, needs_shared
from tests.conftest import run_job as run_task

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# 1280 images at 224 px: ~20 s on 2 idle cores
@pytest.mark.slow
def test_real_cue_conflict_with_random_timm_classifier(compose_in, tmp_path):
    root = needs_shared(DATA / "cue-conflict")
    refs = needs_shared(DATA / "model-vs-human" / "raw-data" / "cue-conflict")
    cfg = compose_in(["task=shape_bias", "model=timm", "model.name=mobilenetv3_small_050",
                      "dataset=cue_conflict", f"dataset.root={root}", "dataset.num_workers=0",
                      "dataset.batch_size=64", "logger=csv", f"task.reference_csv_dirs=[{refs}]",
                      f"task.icons_dir={DATA / 'model-vs-human' / 'icons'}", *QUIET])
    summary = run_task(cfg)
    csv_path = tmp_path / "cue-conflict_mobilenetv3-small-050_session-1.csv"
    df = read_csv(csv_path)  # model-vs-human's format: header, columns, names
    assert len(df) == 1280 and df["imagename"].is_unique
    assert list(df["imagename"]) == sorted(df["imagename"])
    assert set(df["category"]) == set(CATEGORIES) and set(df["response"]) <= set(CATEGORIES)
    assert (df["subj"] == "mobilenetv3_small_050").all()
    recomputed = shape_bias_stats(df)
    saved = json.loads((tmp_path / "summary.json").read_text())
    for result in (summary, saved):
        assert result["counts"]["num_images"] == 1280 and result["counts"]["num_conflict"] == 1200
        assert result["counts"]["num_shape_hits"] == recomputed["num_shape_hits"]
        assert result["counts"]["num_texture_hits"] == recomputed["num_texture_hits"]
        if recomputed["num_shape_hits"] + recomputed["num_texture_hits"]:
            assert result["shape_bias"] == recomputed["shape_bias"]
    assert saved["decision_mapping"] == "imagenet" and saved["preprocessing"] == "model_vs_human"
    assert round(saved["reference"]["humans"], 4) == 0.9587
    assert (tmp_path / "shape_bias_matrixplot.png").is_file()
    assert (tmp_path / "shape_bias_matrixplot.pdf").is_file()
    # scalars and the figure reached the logger
    metrics = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "shape_bias/shape_bias" in metrics and "shape_bias/category/airplane" in metrics
    assert list((tmp_path / "csv" / "images").glob("shape_bias_matrixplot*.png"))
    # a random net: flagged in its provenance sidecar, and still so when plotted from the CSV
    # alone later; error consistency with the 10 human subjects next to its shape bias
    side = json.loads(provenance_sidecar(csv_path).read_text())
    assert side["flag"] == "RANDOM WEIGHTS" and saved["flags"][0] == "RANDOM WEIGHTS"
    assert len(saved["error_consistency"]["per_subject"]) == 10
    assert (tmp_path / "cue-conflict_error-consistency.png").is_file()
    replot = plot_from_csvs([tmp_path], tmp_path / "replot", formats=["png"])
    assert replot["models"]["mobilenetv3_small_050"]["flags"][0] == "RANDOM WEIGHTS"


def _synthetic_shape_bias(compose, train_split: str) -> float:
    cfg = compose(["task=shape_bias", "model=classifier_tiny", "model.img_size=48",
                   "dataset.image_size=48", "dataset.num_classes=4", "dataset.conflict_per_pair=4",
                   "dataset.samples_per_class=48", "dataset.batch_size=32",
                   f"task.train_split={train_split}", "task.train_steps=100", "logger=none",
                   *QUIET])
    summary = run_task(cfg)
    assert summary["decision_mapping"] == "identity"
    assert summary["counts"]["num_conflict"] == 4 * 3 * 4
    return summary["shape_bias"]


@pytest.mark.slow
def test_shape_trained_classifier_is_more_shape_biased_than_texture_trained(tmp_path):
    from tests.conftest import compose_cfg

    shape = _synthetic_shape_bias(lambda o: compose_cfg(o, tmp_path / "shape"), "shape_only")
    texture = _synthetic_shape_bias(lambda o: compose_cfg(o, tmp_path / "texture"), "texture_only")
    assert shape > 0.5 > texture and shape > texture + 0.3, (shape, texture)
    assert (tmp_path / "shape" / "cue-conflict_classifier-tiny_session-1.csv").is_file()


def test_default_config_runs_on_synthetic_with_fallback_classifier(compose_in, tmp_path):
    cfg = compose_in(["task=shape_bias", "dataset.num_classes=3", "dataset.image_size=32",
                      "dataset.samples_per_class=8", "task.train_steps=2", "logger=none", *QUIET])
    assert cfg.model.name == "mae_tiny"  # the root default is not a classifier
    summary = run_task(cfg)
    assert summary["model"] == "classifier_tiny" and summary["trained_in_process"]["steps"] == 2
    assert summary["categories"] == ["circle", "square", "triangle"]
    rows = read_csv(tmp_path / "cue-conflict_classifier-tiny_session-1.csv")
    assert len(rows) == 6 and rows["imagename"].iloc[0] == "circle1-square1.png"
    table = (tmp_path / "shape_bias.csv").read_text().splitlines()
    assert table[0].startswith("name,shape_bias,circle,square,triangle,")


def test_incomplete_cue_conflict_folder_and_non_classifier_are_errors(compose_in, tmp_path):
    root = needs_shared(DATA / "cue-conflict")
    partial = tmp_path / "partial"
    for cat in CATEGORIES[:15]:
        shutil.copytree(root / cat, partial / cat)
    cfg = compose_in(["task=shape_bias", "model=classifier_tiny", "dataset=cue_conflict",
                      f"dataset.root={partial}", "logger=none", *QUIET])
    with pytest.raises(CueConflictLayoutError, match=r"missing category folder\(s\): \['truck'\]"):
        run_task(cfg)
    cfg = compose_in(["task=shape_bias", "model=mae_tiny", "dataset=cue_conflict",
                      f"dataset.root={root}", "logger=none", *QUIET])
    with pytest.raises(ValueError, match="needs a classifier"):
        run_task(cfg)


def test_cue_conflict_preprocessing_default_is_model_vs_human():
    import torchvision.transforms.functional as F
    from omegaconf import OmegaConf

    from selfsup_vis.data.datamodule import CueConflictDataModule
    from selfsup_vis.data.folders import open_rgb
    from selfsup_vis.data.transforms import pipeline_for_model

    root = needs_shared(DATA / "cue-conflict")
    model = OmegaConf.create({"img_size": 224, "mean": [0.485, 0.456, 0.406],
                              "std": [0.229, 0.224, 0.225]})
    images = {}
    for prep in ("model_vs_human", "mmselfsup"):
        dm = CueConflictDataModule(str(root), preprocessing=prep)
        ds = dm.dataset("conflict", pipeline_for_model(model, "eval", crop_pct=dm.eval_crop_pct))
        images[prep] = ds[0]["image"]
        reference = F.normalize(F.to_tensor(open_rgb(ds.paths[0])), model.mean, model.std)
    # model-vs-human: the 224 px stimulus as it is, only normalised
    assert (images["model_vs_human"] - reference).abs().max() < 1e-5
    # MMSelfSup: resize 256, center-crop 224 -> same size, different pixels
    assert images["mmselfsup"].shape == reference.shape
    assert (images["mmselfsup"] - reference).abs().max() > 0.5
