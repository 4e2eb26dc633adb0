"""Entry point: ``python -m selfsup_vis task=<task> model=<model> dataset=<dataset> ...``.

Composes the Hydra config and calls the function named by ``task._target_``; adding a task
never changes this file.
"""

from __future__ import annotations

import sys
import warnings

import hydra
from omegaconf import DictConfig

from selfsup_vis.config import conf_dir, register_configs

EXAMPLES = """\
selfsup_vis: look inside self-supervised vision models.

Examples:
  python -m selfsup_vis                                   # browse the synthetic default
  python -m selfsup_vis task=browse model=mocov2_tiny     # two MoCo v2 views side by side
  python -m selfsup_vis task=browse model=simmim_tiny task.skip_type=[ColorJitter]
  python -m selfsup_vis task=tsne model=mocov2 model.checkpoint=ckpt.pth \\
      dataset=imagenet dataset.root=/data/imagenet
  python -m selfsup_vis task=reconstruct model=mae model.checkpoint=mae.pth task.images=[a.jpg]
  python -m selfsup_vis task=shape_bias model=timm model.name=resnet50 \\
      dataset=cue_conflict dataset.root=/data/cue-conflict
  python -m selfsup_vis task=plot_shape_bias task.csv_dirs=[raw-data/cue-conflict]
  python -m selfsup_vis -m task=browse model=mae_tiny,simmim_tiny      # a sweep
  python -m selfsup_vis -m hydra/launcher=submitit_slurm hydra.launcher.partition=gpu \\
      task=tsne trainer=gpu                                           # on Slurm
Config groups: task, model, dataset, logger (csv|tensorboard|wandb|many), trainer (cpu|gpu|ddp),
hydra/launcher (submitit_local|submitit_slurm). Show the composed config: --cfg job
"""

register_configs()
# conf/hydra/launcher/submitit_{slurm,local}.yaml keep the plugin's names on purpose (typed by the
# plugin's own schema, with tasks/nodes tied to the trainer); Hydra warns about that match.
warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema with the same name")


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> object:
    from selfsup_vis.tasks.common import run_task

    return run_task(cfg)


def main() -> None:
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args):
        print(EXAMPLES)
    else:
        from selfsup_vis.config.validate import check_overrides

        message = check_overrides(str(conf_dir()), "config", [a for a in args if not a.startswith("-")])
        if message:
            print(f"Error: {message}", file=sys.stderr)
            sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
