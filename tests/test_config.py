"""Every config composes; typos and unknown options fail at compose time with clear messages."""

from __future__ import annotations

import itertools

import hydra
import pytest
from omegaconf import OmegaConf

from selfsup_vis.config import conf_dir
from selfsup_vis.config.validate import check_overrides
from tests.conftest import compose_cfg

CONF = conf_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ROOTS = {"image_folder": "/data/folder", "imagenet": "/data/imagenet", "cue_conflict": "/data/cc"}


@pytest.mark.slow
def test_compose_every_task_model_dataset_logger():
    """task × model × dataset, each with every logger (logger=many composes all three)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    count = 0
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for task, model, dataset in itertools.product(options("task"), options("model"), options("dataset")):
            extra = [f"dataset.root={ROOTS[dataset]}"] if dataset in ROOTS else []
            cfg = compose("config", [f"task={task}", f"model={model}", f"dataset={dataset}", "logger=many", *extra],
                          return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            resolved = OmegaConf.to_container(job, resolve=True, throw_on_missing=False)
            assert resolved["task"]["_target_"].startswith("selfsup_vis.tasks.")
            assert set(resolved["logger"]) == {"csv", "tensorboard", "wandb"}
            count += 1
        for logger, trainer in itertools.product(options("logger"), options("trainer")):
            compose("config", [f"logger={logger}", f"trainer={trainer}"])
    GlobalHydra.instance().clear()
    assert count == len(options("task")) * len(options("model")) * len(options("dataset"))


def test_datasets_and_loggers_instantiate(tmp_path):
    for logger in options("logger"):
        cfg = compose_cfg([f"logger={logger}"], tmp_path)
        for name, conf in (cfg.logger or {}).items():
            lg = hydra.utils.instantiate(conf)
            assert type(lg).__name__.lower().startswith(name[:3])
            if name == "wandb":
                assert lg._offline is True  # offline unless the user opts in
    (tmp_path / "cls" ).mkdir()
    for dataset in options("dataset"):
        extra = [f"dataset.root={tmp_path}", "dataset.check_layout=false"] if dataset in ROOTS else []
        if dataset != "cue_conflict":
            extra = [e for e in extra if "check_layout" not in e]
        dm = hydra.utils.instantiate(compose_cfg([f"dataset={dataset}", *extra]).dataset)
        assert dm.name == dataset


def test_trainer_presets_build(tmp_path):
    import pytorch_lightning as pl

    cfg = compose_cfg(["trainer=cpu"], tmp_path)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer, pl.Trainer)
    ddp = compose_cfg(["trainer=ddp"]).trainer
    assert ddp.strategy == "ddp" and ddp.devices == 2


def test_slurm_launcher_keys_follow_the_trainer():
    cfg = compose_cfg(["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.num_nodes=3"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 2 and launcher.nodes == 3 and launcher.gpus_per_node == 2
    for key in ("partition", "timeout_min", "cpus_per_task", "mem_gb", "additional_parameters", "setup"):
        assert key in launcher
    local = compose_cfg(["hydra/launcher=submitit_local"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher")


def test_misspelt_key_names_the_valid_keys():
    message = check_overrides(str(CONF), "config", ["task=browse", "task.n_sampels=3"])
    assert "Did you mean task.n_samples?" in message and "skip_type" in message
    assert check_overrides(str(CONF), "config", ["task.n_samples=3"]) is None
    msg = check_overrides(str(CONF), "config", ["dataset=image_folder", "dataset.skip_corupt=true"])
    assert "dataset.skip_corrupt" in msg


def _error_chain(overrides: list[str]) -> str:
    with pytest.raises(Exception) as info:
        compose_cfg(overrides)
    err, parts = info.value, []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


def test_schema_rejects_wrong_types_and_values():
    assert "n_samples" in _error_chain(["task.n_samples=many"])
    assert "expected one of [train, val]" in _error_chain(["task.phase=test"])
    assert "max_epoch" in _error_chain(["trainer.max_epoch=3"])
