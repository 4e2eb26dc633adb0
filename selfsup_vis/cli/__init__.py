"""Console entry points besides ``selfsup-vis`` (pyproject ``[project.scripts]``): the tools a
user of the installed wheel needs and that are not tasks, each a ``main(argv) -> exit code``:

- ``selfsup-vis-download-cue-conflict`` (:mod:`.download_cue_conflict`): the stimuli, the
  model-vs-human CSVs and icons;
- ``selfsup-vis-export-checkpoint`` (:mod:`.export_checkpoint`): a model in mmpretrain or timm
  layout;
- ``selfsup-vis-plot-shape-bias`` (:mod:`.plot_shape_bias`): the shape-bias plot with
  MMSelfSup's command-line flags.

They sit on the top floor with tasks/ (they compose the lower packages and nothing imports
them); the repository's scripts folder keeps thin wrappers for old command lines.
"""
