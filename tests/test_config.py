"""Every config composes; typos and unknown options fail at compose time with clear messages."""

from __future__ import annotations

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from selfsup_vis.config import conf_dir
from selfsup_vis.config.validate import check_overrides
from tests.conftest import compose_cfg

CONF = conf_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ROOTS = {"image_folder": "/data/folder", "imagenet": "/data/imagenet", "cue_conflict": "/data/cc"}


def test_every_option_of_every_group_composes_and_resolves():
    """Each option of each group once (the groups are independent), with every logger at once;
    the job config resolves (what config_resolved.yaml writes)."""
    GlobalHydra.instance().clear()
    runs = [[f"{group}={opt}"] + ([f"dataset.root={ROOTS[opt]}"] if opt in ROOTS else [])
            for group in ("task", "model", "dataset", "trainer", "logger", "callbacks") for opt in options(group)]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for overrides in runs:
            cfg = compose("config", [*overrides, "logger=many"] if "logger=" not in overrides[0] else overrides,
                          return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            resolved = OmegaConf.to_container(job, resolve=True, throw_on_missing=False)
            assert resolved["task"]["_target_"].startswith("selfsup_vis.tasks."), overrides
    GlobalHydra.instance().clear()


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
    """Our presets extend the plugin's (defaults: [submitit_slurm]); GPUs only for a GPU trainer."""
    cfg = compose_cfg(["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=3"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 2 and launcher.nodes == 3
    assert launcher.gpus_per_node is None  # accelerator auto/cpu: no --gpus-per-node (no GRES on CPU nodes)
    for key in ("partition", "account", "qos", "constraint", "timeout_min", "cpus_per_task", "mem_gb",
                "additional_parameters", "setup"):
        assert key in launcher
    gpu = compose_cfg(["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4"]).hydra.launcher
    assert gpu.gpus_per_node == 4 and gpu.tasks_per_node == 4
    cpu = compose_cfg(["hydra/launcher=slurm", "trainer=cpu"]).hydra.launcher
    assert cpu.gpus_per_node is None and cpu.tasks_per_node == 1 and cpu.cpus_per_task <= 2 and cpu.mem_gb <= 8
    big = compose_cfg(["hydra/launcher=slurm_gpu", "trainer=ddp", "trainer.devices=[0,1,2]"]).hydra.launcher
    assert big.gpus_per_node == 3 and big.tasks_per_node == 3
    local = compose_cfg(["hydra/launcher=local"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher")
    assert not (CONF / "hydra" / "launcher" / "submitit_slurm.yaml").exists()  # no shadowing of the plugin's names


def test_sweep_subdir_is_short_and_flat():
    overrides = [f"model.checkpoint=/very/long/absolute/path/{'x' * 200}/a.ckpt", "task.seed=1"]
    cfg = compose_cfg(overrides)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.job.num = 3
        cfg.hydra.job.override_dirname = ",".join(overrides)
    subdir = cfg.hydra.sweep.subdir
    assert subdir.startswith("3_") and "/" not in subdir and len(subdir) == 10


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
