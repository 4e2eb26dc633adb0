"""Issue 10: bad values are refused at start, before any extraction, by one validation step
(``selfsup_vis.config.validate.validate``, rules in the schema fields' metadata) or by the typed
config itself (enums), each error naming the key and the value; the CLI exits with 2."""

from __future__ import annotations

import json

import pytest
from hydra.errors import ConfigCompositionException

from selfsup_vis.config.validate import ConfigError, validate
from selfsup_vis.tasks.common import run_task
from tests.conftest import compose_cfg, run_main

BAD = [
    (["task=browse", "task.n_samples=0"], r"task\.n_samples=0: must be >= 1"),
    (["task=browse", "task.n_samples=-1"], r"task\.n_samples=-1: must be >= 1"),
    (["task=tsne", "task.max_samples_per_class=-1"], r"task\.max_samples_per_class=-1: must be >= 1"),
    (["task=tsne", "task.max_num_class=-3"], r"task\.max_num_class=-3: must be >= 1"),
    (["task=tsne", "task.max_num_class=0"], r"task\.max_num_class=0: must be >= 1"),
    (["task=tsne", "dataset.batch_size=0"], r"dataset\.batch_size=0: must be >= 1"),
    (["task=tsne", "task.perplexity=0"], r"task\.perplexity=0\.0: must be > 0"),
    (["task=tsne", "task.perplexity=-5"], r"task\.perplexity=-5\.0: must be > 0"),
    (["task=tsne", "task.n_iter=0"], r"task\.n_iter=0: must be >= 1"),
    (["task=tsne", "task.class_idx=[1,-2]"], r"task\.class_idx\[1\]=-2: must be >= 0"),
    (["task=reconstruct", "model=mae_tiny", "model.img_size=60"],
     r"model\.img_size=60: not divisible by model\.patch_size=8"),
    (["task=reconstruct", "model=simmim_tiny", "model.img_size=72"], r"model\.img_size=72: not divisible by"),
    (["task=reconstruct", "task.mask_ratio=1.0"], r"task\.mask_ratio=1\.0: must be < 1"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o[1:]) for o, _ in BAD])
def test_bad_value_is_refused_naming_key_and_value(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(overrides))


@pytest.mark.slow
def test_defaults_of_every_task_are_valid():
    for task in ("browse", "tsne", "reconstruct", "pretrain", "shape_bias", "plot_shape_bias"):
        for model in ("mae_tiny", "mocov2_tiny", "simmim_tiny", "maskfeat_tiny", "mae", "simmim"):
            validate(compose_cfg([f"task={task}", f"model={model}"]))


def test_all_errors_are_listed_first_one_first():
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(["task=tsne", "task.perplexity=0", "dataset.batch_size=0"]))
    lines = str(info.value).splitlines()
    assert lines[0].startswith("task.perplexity=0.0") and "also: dataset.batch_size=0" in lines[1]


def test_unknown_figure_format_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["task=tsne", "task.formats=[png,xyz]"])
    assert "task.formats=[png,xyz]" in str(info.value) and "'xyz'" in str(info.value.__cause__)


def test_refused_before_any_extraction(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"task\.perplexity=0\.0"):
        run_task(compose_cfg(["task=tsne", "model=mocov2_tiny", "task.perplexity=0", "task.cache=false"], out))
    assert not (out / "feature_cache").exists() and not (out / "features").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and s["error_type"] == "ConfigError"
    assert not [w for w in s["written"] if w.endswith((".png", ".npy"))]


def test_cli_config_error_is_one_line_and_exit_code_2(tmp_path):
    out = tmp_path / "never_created"
    proc = run_main(["task=tsne", "model=mocov2_tiny", "task.n_iter=0", "task.max_num_class=-3",
                    f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "Error (config error): task.max_num_class=-3: must be >= 1", proc.stderr
    assert "task.n_iter=0" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()  # refused before Hydra made the run directory
    proc = run_main(["task=browse", "task.formats=[xyz]", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error (config error): Error merging override task.formats=[xyz]")
    assert "'xyz'" in proc.stderr
