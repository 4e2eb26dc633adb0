"""Every config composes; typos and unknown options fail at compose time with clear messages."""

from __future__ import annotations

import hydra
import pytest
from omegaconf import OmegaConf, open_dict

from selfsup_vis.config import conf_dir
from selfsup_vis.config.validate import config_error_message
from tests.conftest import compose_cfg

CONF = conf_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ROOTS = {"image_folder": "/data/folder", "imagenet": "/data/imagenet", "cue_conflict": "/data/cc"}


@pytest.mark.slow
def test_every_option_of_every_group_composes_and_resolves():
    """Each option of each group once (the groups are independent), with every logger at once;
    the job config resolves (what config_resolved.yaml writes)."""
    runs = [[f"{group}={opt}"] + ([f"dataset.root={ROOTS[opt]}"] if opt in ROOTS else [])
            for group in ("task", "model", "dataset", "trainer", "logger", "callbacks") for opt in options(group)]
    for overrides in runs:
        cfg = compose_cfg([*overrides, "logger=many"] if "logger=" not in overrides[0] else overrides)
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        resolved = OmegaConf.to_container(job, resolve=True, throw_on_missing=False)
        assert resolved["task"]["_target_"].startswith("selfsup_vis.tasks."), overrides


@pytest.mark.slow
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


def _config_error(overrides: list[str]) -> str:
    with pytest.raises(Exception) as info:
        compose_cfg(overrides)
    return config_error_message(info.value)


def test_misspelt_key_names_the_valid_keys_of_the_composed_config():
    """The valid keys come from the node Hydra composed (Hydra's error carries it): those of
    the task chosen, also when the task is switched in the same command."""
    message = _config_error(["task=browse", "task.n_sampels=3"])
    assert "Did you mean task.n_samples?" in message and "skip_type" in message
    message = _config_error(["task=tsne", "task.perplexty=5"])
    assert "Did you mean task.perplexity?" in message and "skip_type" not in message
    assert "dataset.skip_corrupt" in _config_error(["dataset=image_folder", "dataset.skip_corupt=true"])
    assert "Did you mean model?" in _config_error(["modle=mae_tiny"])  # a misspelt group is a root key
    assert "Valid keys of task:" in _config_error(["task.foo.bar=1"])  # the first missing level
    assert "Did you mean hydra.job.chdir?" in _config_error(["hydra.job.chdri=true"])
    compose_cfg(["task.n_samples=3"])


def test_unknown_option_lists_the_choices_and_a_close_one():
    message = _config_error(["model=mae_tny"])
    assert "Could not find 'model/mae_tny'" in message and "mocov2_tiny" in message
    assert message.endswith("Did you mean model=mae_tiny?") and "Config search path" not in message


def test_config_constants_agree_with_timm():
    """The config layer writes timm's ImageNet statistics as literals (it must not import timm)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from selfsup_vis.config.model import IMAGENET_MEAN, IMAGENET_STD

    assert IMAGENET_MEAN == list(IMAGENET_DEFAULT_MEAN) and IMAGENET_STD == list(IMAGENET_DEFAULT_STD)


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
