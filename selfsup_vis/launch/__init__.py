"""Running jobs on Slurm (or as local submitit processes) and making their outcome visible
(``conf/hydra/launcher/{slurm,slurm_gpu,local}.yaml``; the ``sv.*`` resolvers they use are in
``selfsup_vis.config.resolvers``).

- ``status``: the per-job ``status.json`` and the status table printed when a sweep ends.
- ``requeue``: checkpoint-and-requeue on SIGUSR1/SIGUSR2/SIGTERM for Lightning training, and
  finding the checkpoint a requeued job resumes from.
- ``rerun``: one run directory, one run: a finished run's directory is refused (or replaced,
  ``task.overwrite=true``), an unfinished one resumed.
"""
