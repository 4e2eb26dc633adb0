"""One contract per model family, one registry: the families are derived from the schemas and
the classes that point back at them; registry, schemas, conf/model/*.yaml, mmpretrain types and
pipelines agree; no constructor restates a schema default; and a NEW masked-image family made
from tests/templates/toymim.py runs task=reconstruct and task=pretrain from its own files only."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.config_store import ConfigStore

from selfsup_vis.config import conf_dir
from selfsup_vis.config.defaults import restated_defaults, takes_schema
from selfsup_vis.config.model import model_schemas, register_model_schemas
from selfsup_vis.config.schemas import Pipeline
from selfsup_vis.data.datamodule import (
    CueConflictDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
    SyntheticDataModule,
)
from selfsup_vis.models import MaskedImageModule, build_model, families, model_pipeline
from tests.conftest import compose_cfg

TEMPLATE = Path(__file__).parent / "templates" / "toymim.py"
DATAMODULES = (SyntheticDataModule, ImageFolderDataModule, ImageNetDataModule, CueConflictDataModule)


def test_no_constructor_restates_a_schema_default() -> None:
    restated = [d for fam in families().values() for d in restated_defaults(fam.cls)]
    restated += [d for cls in DATAMODULES for d in restated_defaults(cls)]
    assert restated == []


def test_restated_defaults_are_found_and_missing_ones_filled() -> None:
    @dataclass
    class Knobs:
        _target_: str = "x"
        a: int = 1
        b: int = 2

    @takes_schema(Knobs)
    class Twice:
        def __init__(self, *, a: int, b: int = 2) -> None:
            self.a, self.b = a, b

    assert restated_defaults(Twice) == ["test_restated_defaults_are_found_and_missing_ones_filled"
                                        ".<locals>.Twice.b=2"]
    assert (Twice().a, Twice(b=5).b) == (1, 5)  # the schema fills what the call leaves out


def test_registry_schemas_yaml_mmconfig_and_pipelines_agree() -> None:
    fams = families()
    assert set(fams) == set(model_schemas()) >= {"mae", "simmim", "maskfeat", "mocov2", "mmcls", "timm"}
    mm_types = [t for f in fams.values() for t in f.cls.mm_types]
    assert len(mm_types) == len(set(mm_types)), "an mmpretrain type read by two families"
    assert {"MAE", "SimMIM", "MaskFeat", "MoCo", "ImageClassifier"} <= set(mm_types)
    for f in fams.values():
        assert f.cls.schema is f.schema and f.pipeline in {p.value for p in Pipeline}
        assert f.reconstructs == issubclass(f.cls, MaskedImageModule)
    assert {f.name for f in fams.values() if f.reconstructs} == {"mae", "simmim", "maskfeat"}
    targets = {f.schema._target_: f for f in fams.values()}
    for yaml in sorted((conf_dir() / "model").glob("*.yaml")):
        cfg = compose_cfg([f"model={yaml.stem}"]).model
        assert cfg._target_ in targets, f"{yaml.name}: {cfg._target_} is no family's class"
        fam = targets[cfg._target_]
        assert set(cfg) <= {fl for fl in fam.schema.__dataclass_fields__}, yaml.name
        pipe = model_pipeline(cfg)  # the family's own training pipeline draws its own masks
        assert pipe.name == str(cfg.pipeline) and (pipe.mask_generator is not None) == fam.data_masks


def test_a_pipeline_named_after_another_family_draws_that_familys_masks() -> None:
    """Browsing pipeline=simmim with an MAE: SimMIM's rule at the MAE's size; mae draws none."""
    cfg = compose_cfg(["model=mae_tiny"]).model
    gen = model_pipeline(cfg, "simmim").mask_generator
    assert gen is not None and gen(torch.Generator().manual_seed(0)).shape == (64 // 4, 64 // 4)
    assert model_pipeline(cfg, "mae").mask_generator is None


# ----------------------------------------------------------------------------- a new family
@pytest.fixture
def toy_family(tmp_path: Path):
    """The template copied into a fresh package ``toyfam`` and a conf dir of its own: the files
    a new masked-image family consists of (outside the package: 2 + the package marker)."""
    pkg = tmp_path / "toyfam"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(TEMPLATE, pkg / "toymim.py")
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "toymim_tiny.yaml").write_text(
        "defaults:\n  - /schema/model/toymim@_here_\n  - _self_\n\n"
        "name: toymim_tiny\nimg_size: 32\nembed_dim: 16\n"
        "optimizer: {lr: 1.0e-3}\nscheduler: {warmup_epochs: 0, recipe_epochs: 10}\nlr_base_batch: null\n")
    sys.path.insert(0, str(tmp_path))
    try:
        __import__("toyfam.toymim")
        register_model_schemas()  # what selfsup_vis.config does at start for its own schemas
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("toyfam")]:
            del sys.modules[name]
        ConfigStore.instance().repo["schema"]["model"].pop("toymim.yaml", None)
        assert "toymim" not in families()  # later tests see the package's families only


def test_a_new_masked_image_family_runs_reconstruct_and_pretrain(toy_family: Path, tmp_path: Path) -> None:
    from selfsup_vis.tasks.common import run_task

    package = Path(__file__).resolve().parents[1]
    before = {p: p.stat().st_mtime_ns for p in [*package.joinpath("selfsup_vis").rglob("*.py"),
                                                *package.joinpath("conf").rglob("*.yaml")]}
    search = [f"hydra.searchpath=[file://{toy_family / 'conf'}]", "model=toymim_tiny",
              "dataset.image_size=32"]
    fam = families()["toymim"]
    assert fam.reconstructs and fam.data_masks and fam.pipeline == "mae"
    model = build_model(compose_cfg(search).model)
    assert type(model).__name__ == "ToyMIM" and model.grid == 4

    out = tmp_path / "rec"
    s = run_task(compose_cfg([*search, "task=reconstruct", "task.max_images=2"], out))
    assert s["algorithm"] == "toymim" and s["error_kind"] == "pixel_mse"
    assert np.isfinite(s["mean_masked_error"]) and len(s["images"]) == 2
    assert np.load(out / "reconstructions.npz")["mask"].shape == (2, 4, 4)

    out = tmp_path / "pre"
    s = run_task(compose_cfg([*search, "task=pretrain", "trainer.max_steps=2", "dataset.batch_size=4",
                              "dataset.samples_per_class=2", "dataset.val_samples_per_class=1",
                              "trainer.enable_progress_bar=false", "callbacks.embedding=null",
                              "callbacks.feature_health.num_samples=8", "callbacks.attention=null",
                              "callbacks.reconstruction.num_images=2"], out))
    assert s["global_step"] == 2 and np.isfinite(s["final_metrics"]["train/loss"])
    assert not s["callback_failures"]
    assert list((out / "reconstructions").glob("*.png"))  # the callback drew the new family too
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # nothing of the package was touched: the family is its own files
    assert sorted(p.relative_to(toy_family).as_posix() for p in toy_family.rglob("*")
                  if p.is_file() and p.suffix in (".py", ".yaml") and "pycache" not in p.parts
                  and p.parts[len(toy_family.parts)] in ("toyfam", "conf")) == [
        "conf/model/toymim_tiny.yaml", "toyfam/__init__.py", "toyfam/toymim.py"]
