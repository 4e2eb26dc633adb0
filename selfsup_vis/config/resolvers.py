"""OmegaConf resolvers (short ``sv.`` names) used by the configs; registered once by
``selfsup_vis.config.register_configs`` (config infrastructure, used by the launcher presets and loggers).

- ``${sv.hash:<value>}``: 8 hex digits of the SHA-1 of the value's text. The sweep job folder is
  ``<job number>_${sv.hash:${hydra.job.override_dirname}}`` (short, never nested, never too long);
  the W&B run id is ``${sv.hash:${hydra:runtime.output_dir}}`` (unique per run, the same after a
  Slurm requeue, which reuses the job folder).
- ``${sv.ntasks:<devices>,<accelerator>}``: ``trainer.devices`` as a task count per node
  (an int, a list of device ids, or "auto"/-1 = 1 on CPU).
- ``${sv.gpus:<accelerator>,<devices>}``: GPUs per node to request, ``None`` (no ``--gpus-per-node``)
  unless the accelerator is a GPU: a CPU node has no GRES and ``sbatch --gpus-per-node`` fails there.
"""

from __future__ import annotations

import hashlib
from typing import Any

from omegaconf import ListConfig, OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")


def short_hash(value: Any) -> str:
    return hashlib.sha1(str(value).encode()).hexdigest()[:8]


def ntasks(devices: Any, accelerator: str = "cpu") -> int:
    if isinstance(devices, ListConfig | list | tuple):
        return len(devices)
    text = str(devices).strip()
    if text.lstrip("-").isdigit() and int(text) > 0:
        return int(text)
    if "," in text:  # "0,1"
        return len([d for d in text.split(",") if d.strip()])
    if str(accelerator).lower() == "cpu":
        return 1
    raise ValueError(f"trainer.devices={devices!r}: on Slurm give the number of devices per node "
                     "(e.g. trainer.devices=4): it sets --ntasks-per-node (and --gpus-per-node)")


def gpus(accelerator: Any, devices: Any) -> int | None:
    if str(accelerator).lower() not in GPU_ACCELERATORS:
        return None
    return ntasks(devices, accelerator)


def register_resolvers() -> None:
    for name, fn in (("sv.hash", short_hash), ("sv.ntasks", ntasks), ("sv.gpus", gpus)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
