"""task=shape_bias: a classifier on cue-conflict images, scored as model-vs-human does.

config -> data (cue-conflict folder, or the synthetic conflict split) -> classifier (trained
in-process for a few steps on synthetic data when it has no checkpoint) -> Trainer.test with
the ``ShapeBias`` metric updated in ``test_step`` (its states gather across DDP ranks) ->
``cue-conflict_<model>_session-1.csv``, ``summary.json``, ``shape_bias.csv`` and the matrix
plot (with humans / reference models from ``task.reference_csv_dirs``), the scalars and the
figure sent to every logger.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import hydra
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from selfsup_vis.config import compose
from selfsup_vis.data.cue_conflict_categories import CATEGORIES
from selfsup_vis.data.datamodule import SyntheticDataModule
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.models import build_model
from selfsup_vis.models.classifier import MMClassifier, TimmClassifier
from selfsup_vis.report.summaries import ShapeBiasSummary
from selfsup_vis.shape_bias.analysis import (
    build_groups,
    csv_name,
    frame_from_rows,
    provenance_sidecar,
    read_csv_dirs,
)
from selfsup_vis.shape_bias.evaluator import ShapeBiasEvaluator
from selfsup_vis.shape_bias.metric import ShapeBias, write_rows_csv
from selfsup_vis.shape_bias.plots import apply_styles
from selfsup_vis.shape_bias.report import resolve_icons, write_shape_bias_outputs
from selfsup_vis.tasks.common import (
    TaskRun,
    build_trainer,
    is_global_zero,
    phase,
)
from selfsup_vis.utils.io import write_json

log = logging.getLogger(__name__)


def _is_classifier(model_cfg: Any) -> bool:
    try:
        cls = hydra.utils.get_class(model_cfg["_target_"])
    except Exception:
        return False
    return isinstance(cls, type) and issubclass(cls, MMClassifier | TimmClassifier)


def _compose_model(name: str) -> DictConfig:
    """The model config ``conf/model/<name>.yaml`` composed like ``model=<name>``."""
    return compose([f"model={name}"], activate=False).model


def _num_outputs(model: torch.nn.Module, img_size: int) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, img_size, img_size))
    model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise TypeError(f"the classifier must return (batch, classes) logits, got "
                        f"{getattr(out, 'shape', type(out).__name__)}")
    return int(out.shape[1])


def _train_in_process(cfg: DictConfig, model: pl.LightningModule, dm: Any, loggers: list,
                      steps: int, split: str, lr: float) -> dict[str, Any]:
    """A few optimisation steps of the classifier's own ``training_step`` on ``split`` (the
    data module was built with ``train_split=split``)."""
    trainer = build_trainer(cfg, loggers, [], max_steps=steps, max_epochs=-1,
                            limit_val_batches=0, num_sanity_val_steps=0,
                            enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    loss = trainer.callback_metrics.get("train/loss")
    return {"steps": int(trainer.global_step), "split": split, "lr": lr,
            "final_loss": float(loss) if loss is not None else math.nan}


def _classifier_config(cfg: DictConfig, synthetic: bool, categories: list[str]) -> tuple[dict[str, Any], bool]:
    """The classifier's config (the fallback classifier on synthetic data when ``model`` is
    none) and whether it is trained in-process first (its lr then an absolute ``task.train_lr``)."""
    t, model_cfg = cfg.task, cfg.model
    if not _is_classifier(model_cfg):
        if not synthetic:
            raise ValueError(f"task=shape_bias needs a classifier; model={model_cfg.get('name')} "
                             f"({model_cfg.get('_target_')}) is not one. Use e.g. model=timm "
                             "model.model_name=resnet50 or model=mmcls model.checkpoint=...")
        log.info("model %s is not a classifier: using model=%s on the synthetic data",
                 model_cfg.get("name"), t.fallback_model)
        model_cfg = _compose_model(t.fallback_model)
    model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    train = t.train if t.train is not None else (synthetic and not model_cfg.get("checkpoint"))
    if train and synthetic:
        model_cfg["num_classes"] = len(categories)
    if train:  # task.train_lr reaches the model through its constructor: an absolute lr
        model_cfg["optimizer"] = {**(model_cfg.get("optimizer") or {}), "lr": float(t.train_lr)}
        model_cfg["lr_base_batch"] = None
    return model_cfg, bool(train)


def _decision_mapping(t: DictConfig, model: Any, img_size: int, dm_name: str, categories: list[str]) -> str:
    n_out = _num_outputs(model, img_size)
    mapping = t.decision_mapping or ("imagenet" if n_out == 1000 else "identity")
    if mapping == "identity" and n_out != len(categories):
        raise ValueError(
            f"the classifier outputs {n_out} classes but {dm_name} has {len(categories)} "
            f"categories {categories}; use a {len(categories)}-class model, task.train=true "
            "(synthetic data) or task.decision_mapping=imagenet for 1000 ImageNet logits")
    return mapping


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    dm = hydra.utils.instantiate(cfg.dataset, eval_split=t.split, train_split=t.train_split)
    synthetic = isinstance(dm, SyntheticDataModule)
    eval_set = dm.dataset(t.split)
    categories = list(eval_set.classes) if synthetic else list(CATEGORIES)
    if not synthetic and list(eval_set.classes) != list(CATEGORIES):
        raise ValueError(f"cue-conflict folders {eval_set.classes} are not the 16 categories")
    model_cfg, train = _classifier_config(cfg, synthetic, categories)
    model = build_model(model_cfg)
    mapping = _decision_mapping(t, model, int(model_cfg["img_size"]), dm.name, categories)
    pipeline = pipeline_for_model(OmegaConf.create(model_cfg), "eval", crop_pct=dm.eval_crop_pct)
    dm.configure(train=pipeline, eval=pipeline)
    model_name = t.model_name or model_cfg.get("name") or "model"
    # every tensor of a classifier decides (backbone, neck, head): none may be silently random
    prov = run.model_provenance(model, {**model_cfg, "name": model_name}, dataset=dm.name,
                                split=str(t.split), n=len(eval_set))
    if train and t.train_steps > 0:
        run.set_provenance(prov.replace(random=False, weights=(
            f"trained in-process: {t.train_steps} steps on {dm.name}/{t.train_split} from "
            + (f"random init (seed {cfg.seed})" if prov.random else prov.weights))))
    training = None
    if train:
        with phase(f"training {model_name} in-process on {t.train_split} ({t.train_steps} steps)"):
            training = _train_in_process(cfg, model, dm, run.loggers, t.train_steps, t.train_split, t.train_lr)

    evaluator = ShapeBiasEvaluator(model, ShapeBias(categories, mapping, subject=model_name))
    with phase(f"shape bias of {model_name} on {dm.name}/{t.split} ({len(eval_set)} images)"):
        build_trainer(cfg, run.loggers, []).test(evaluator, dataloaders=dm.test_dataloader(), verbose=False)
    assert evaluator.summary is not None
    result = evaluator.summary
    files, reference, flags, consistency = (
        _figure_and_tables(run, t, evaluator.rows, model_name, dm.name, categories)
        if is_global_zero() else (None, None, None, None))  # the outputs are rank zero's
    summary = ShapeBiasSummary(
        model=model_name, dataset=dm.name, split=t.split, decision_mapping=mapping, categories=categories,
        preprocessing=getattr(dm, "preprocessing", None), **result, trained_in_process=training,
        files=files, reference=reference, flags=flags, error_consistency=consistency)
    written = run.write_summary(summary)
    log.info("shape bias of %s: %.4f (%d shape / %d texture decisions on %d conflict images)",
             model_name, result["shape_bias"], result["counts"]["num_shape_hits"],
             result["counts"]["num_texture_hits"], result["counts"]["num_conflict"])
    return written


def _figure_and_tables(run: TaskRun, t: DictConfig, rows: list, model_name: str, dataset: str,
                       categories: list[str]) -> tuple[dict[str, Any], dict[str, float], list[str],
                                                       dict[str, Any] | None]:
    """model-vs-human's raw-data CSV (+ its provenance sidecar), ``shape_bias.csv``, the matrix
    and box plots and error consistency, with the reference CSVs (humans, other models) next to
    the model; returns (files, the references' shape bias, the model's flags, its error
    consistency with the human subjects when their CSVs are among the references)."""
    out = run.dir
    csv_path = write_rows_csv(out / csv_name(model_name), rows)
    sidecar = write_json(provenance_sidecar(csv_path), run.provenance.to_dict())  # for plot_shape_bias
    df = frame_from_rows(rows, str(csv_path))
    reference_dirs = list(t.reference_csv_dirs)
    if reference_dirs and categories == list(CATEGORIES):
        ref = read_csv_dirs(reference_dirs)
        clash = ref["subj"] == model_name
        if clash.any():
            log.warning("reference CSVs also hold subject %r; leaving those rows out", model_name)
        df = pd.concat([ref[~clash], df], ignore_index=True)
    elif reference_dirs:
        log.warning("reference CSVs are for the 16 cue-conflict categories; not drawn for %s", dataset)
    groups = build_groups(df, None, None, categories)
    apply_styles(groups)
    icons = resolve_icons(t.icons_dir) if categories == list(CATEGORIES) else {}
    outputs = write_shape_bias_outputs(df, groups, categories, out, "shape_bias_matrixplot",
                                       list(t.formats), icons, run.provenance, run.loggers)
    ours = next(g for g in groups if g.name == model_name)
    files = {"csv": str(csv_path), "provenance": str(sidecar), "table": str(out / "shape_bias.csv"),
             "figures": outputs["files"][:-1]}
    return files, {g.name: g.shape_bias for g in groups if g.name != model_name}, ours.flags, \
        outputs["error_consistency"].get(model_name)
