"""The CLI: true subprocesses for the installed wheel's entry point and the jobs of a sweep
through the local launcher (submitit starts them); everything else runs the real ``main()`` in this process
(``run_main``) or the harness (``run_inprocess``), loggers read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup_vis.data.cue_conflict import CueConflictLayoutError, list_cue_conflict
from tests.conftest import REPO, assert_ok, run_cli, run_inprocess, run_main
from tests.logreaders import tensorboard_tags, wandb_history


def _nontrivial_png(path: Path, min_side: int = 100) -> None:
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    assert min(arr.shape[:2]) >= min_side, f"{path} is only {arr.shape}"
    assert arr.std() > 20, f"{path} looks blank (std {arr.std():.1f})"


def test_help_shows_examples(tmp_path):
    proc = run_main(["--help"], tmp_path)
    assert_ok(proc)
    assert "Examples:" in proc.stdout and "task=tsne" in proc.stdout and "hydra/launcher=slurm" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,expect_views,expect_mask",
    [("mocov2_tiny", 2, False), ("simmim_tiny", 1, True), ("maskfeat_tiny", 1, True)],
)
def test_browse_end_to_end_with_all_loggers(tmp_path, model, expect_views, expect_mask):
    out = tmp_path / "run"
    run_inprocess(["task=browse", f"model={model}", "logger=many", "task.n_samples=3"], out)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["samples"]) == 3
    for rec in summary["samples"]:
        assert len(rec["view_shapes"]) == expect_views
        assert (rec["mask_shape"] is not None) == expect_mask
        for f in rec["files"]:
            assert Path(f).name.startswith(f"{rec['index']:06d}_")
            _nontrivial_png(Path(f))
    files = sorted((out / "browse").glob("*.png"))
    assert len(files) == 3 and len({f.name for f in files}) == 3
    _nontrivial_png(out / "browse_grid.png")
    assert (out / "config_resolved.yaml").is_file()
    # the loggers: CSV image + scalars, TensorBoard events, W&B offline history
    assert list((out / "csv" / "images").glob("browse_*.png"))
    assert "browse/n_samples" in (out / "csv" / "metrics.csv").read_text()
    tags = tensorboard_tags(out / "tensorboard")
    assert "browse/n_samples" in tags["scalars"] and any(t.startswith("browse/") for t in tags["images"])
    history = wandb_history(out)
    keys = set().union(*history)
    assert "browse/n_samples" in keys and any(k.endswith("_type") and "browse/" in k for k in keys)


def test_browse_skip_type_and_val_phase(tmp_path):
    out = tmp_path / "run"
    run_inprocess(["model=mocov2_tiny", "task.skip_type=[ColorJitter,GaussianBlur]", "task.n_samples=2"], out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == ["ColorJitter", "GaussianBlur"]
    assert "→ ColorJitter" not in summary["pipeline"] and "→ RandomGrayscale" in summary["pipeline"]
    out2 = tmp_path / "val"
    run_inprocess(["task.phase=val", "task.n_samples=2"], out2)
    assert json.loads((out2 / "summary.json").read_text())["samples"][0]["view_shapes"] == [[3, 64, 64]]


@pytest.mark.slow
def test_multirun_through_the_local_launcher(tmp_path):
    """The jobs are real processes started by submitit; the sweep's command runs here."""
    sweep = tmp_path / "sweep"
    proc = run_main(
        ["-m", "hydra/launcher=local", "task=browse", "model=mocov2_tiny,simmim_tiny",
         "task.n_samples=2", f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )
    assert_ok(proc)
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 2
    pipelines = {json.loads(s.read_text())["pipeline"].split("'")[1] for s in summaries}
    assert pipelines == {"mocov2", "simmim"}


@pytest.mark.slow
def test_failing_job_closes_loggers_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_main(
        ["-m", "task=browse", "task.split=nope,train", "task.n_samples=1", "logger=wandb", f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )
    assert "synthetic split 'nope' unknown" in proc.stderr + proc.stdout
    assert proc.returncode == 1 and "2 jobs, 1 done, 1 not done" in proc.stderr  # the table, before main returns
    statuses = sorted(json.loads(f.read_text())["status"] for f in sweep.glob("*/summary.json"))
    assert statuses == ["failed", "success"]  # the failure is recorded and the second job still ran


def test_unknown_option_and_misspelt_key(tmp_path):
    proc = run_main(["model=nope"], tmp_path)
    assert proc.returncode == 2
    assert "Could not find 'model/nope'" in proc.stderr and "mae_tiny" in proc.stderr
    proc = run_main(["task.n_sampels=3"], tmp_path)
    assert proc.returncode == 2 and "Did you mean task.n_samples?" in proc.stderr
    assert "Valid keys of task:" in proc.stderr and "skip_type" in proc.stderr
    proc = run_main(["task=tsne", "task.perplexity=0"], tmp_path)  # a value rule: before any work
    assert proc.returncode == 2 and "task.perplexity=0.0: must be > 0" in proc.stderr
    proc = run_main(["--config-dir", str(tmp_path / "nowhere"), "--cfg", "job"], tmp_path)
    assert proc.returncode == 2 and "nowhere' not found" in proc.stderr
    proc = run_main(["--help", "task.n_sampels=3"], tmp_path)  # --help composes outside Hydra's reporter
    assert proc.returncode == 2 and "Did you mean task.n_samples?" in proc.stderr


# ------------------------------------------------------------------ Hydra's own command line
# The CLI is a plain Hydra app: whatever Hydra composes runs, config errors are explained from
# what it composed. Each of these was refused by a check of argv before Hydra composed.
HEAVY = ("torch", "pytorch_lightning", "lightning", "timm")


@pytest.mark.parametrize("args,code", [(["--help"], 0), (["--cfg", "job"], 0), (["task.n_sampels=3"], 2),
                                       (["model=mae_tny"], 2)],
                         ids=["help", "cfg-job", "misspelt-key", "unknown-option"])
def test_answers_without_importing_torch(tmp_path, args, code):
    """--help, --cfg job and composition errors never load torch, Lightning or timm (15-19 s on
    an idle 2-core machine when they did; their time is measured in the README, not asserted)."""
    probe = ("import runpy, sys\n"
             f"sys.argv = ['selfsup_vis', *{args!r}]\n"
             "try:\n    runpy.run_module('selfsup_vis', run_name='__main__')\n"
             f"finally:\n    print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stderr, proc.stderr[-3000:]


def test_shell_completion_install_and_query(tmp_path):
    proc = run_main(["-sc", "install=bash"], tmp_path)
    assert_ok(proc)
    assert "hydra_bash_completion" in proc.stdout
    proc = run_main(["-sc", "query=bash"], tmp_path, env={"COMP_LINE": "selfsup-vis model=mae_t"})
    assert_ok(proc)
    assert "model=mae_tiny" in proc.stdout.split()


def _user_model(root: Path) -> Path:
    """A user's own option of the model group, in a directory of their own."""
    (root / "model").mkdir(parents=True)
    (root / "model" / "my_mae.yaml").write_text("defaults:\n  - mae_tiny\n  - _self_\n\nname: my_mae\nembed_dim: 48\n")
    return root


@pytest.mark.parametrize("how", ["--config-dir", "-cd", "hydra.searchpath"])
def test_user_model_from_a_config_dir_or_the_searchpath(tmp_path, how):
    user = _user_model(tmp_path / "cfg")
    where = [f"hydra.searchpath=[file://{user}]"] if how == "hydra.searchpath" else [how, str(user)]
    proc = run_main([*where, "model=my_mae", "--cfg", "job", "-p", "model"], tmp_path)
    assert_ok(proc)
    assert "name: my_mae" in proc.stdout and "embed_dim: 48" in proc.stdout
    assert "_target_: selfsup_vis.models.mae.MAE" in proc.stdout
    # its keys and its name are checked against what Hydra found there
    proc = run_main([*where, "model=my_mae", "model.embed_dm=32", "--cfg", "job"], tmp_path)
    assert proc.returncode == 2 and "Did you mean model.embed_dim?" in proc.stderr
    proc = run_main([*where, "model=my_maee", "--cfg", "job"], tmp_path)
    assert proc.returncode == 2 and "Did you mean model=my_mae?" in proc.stderr


def test_experiment_file_switches_the_task_and_sets_its_keys(tmp_path):
    (tmp_path / "exp" / "experiment").mkdir(parents=True)
    (tmp_path / "exp" / "experiment" / "x.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /task: tsne\n\ntask:\n  perplexity: 7.0\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'exp'}]"
    proc = run_main([searchpath, "+experiment=x", "task.max_samples_per_class=3", "--cfg", "job", "-p", "task"],
                    tmp_path)
    assert_ok(proc)
    assert "_target_: selfsup_vis.tasks.tsne.run" in proc.stdout
    assert "perplexity: 7.0" in proc.stdout and "max_samples_per_class: 3" in proc.stdout
    proc = run_main([searchpath, "+experiment=x", "task.perplexty=9", "--cfg", "job"], tmp_path)
    assert proc.returncode == 2 and "Did you mean task.perplexity?" in proc.stderr


def test_show_the_resolved_hydra_config(tmp_path):
    proc = run_main(["--cfg", "hydra", "-p", "hydra.run", "--resolve", "task=tsne"], tmp_path)
    assert_ok(proc)
    assert "dir: outputs/tsne/" in proc.stdout  # ${hydra.runtime.choices.task} and ${now:...} resolved


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    """The default run dir carries microseconds: two processes started together (a shell loop, a
    job array) never share one, where the second would take the first's run for its own."""
    cmd = [sys.executable, "-m", "selfsup_vis", "--cfg", "hydra", "-p", "hydra.run.dir", "--resolve", "task=tsne"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    dirs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(re.fullmatch(r"outputs/tsne/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d{6}", d) for d in dirs), dirs
    assert dirs[0] != dirs[1]


def test_job_chdir(tmp_path):
    """hydra.job.chdir=true: the job runs inside its output directory, outputs land there."""
    out = tmp_path / "run"
    proc = run_main(["hydra.job.chdir=true", f"hydra.run.dir={out}", "task.n_samples=1"], tmp_path)
    assert_ok(proc)
    assert json.loads((out / "summary.json").read_text())["status"] == "success"


def test_bad_dataset_roots(tmp_path):
    proc = run_main(["dataset=image_folder", f"dataset.root={tmp_path / 'missing'}", f"hydra.run.dir={tmp_path / 'o'}"], tmp_path)
    assert proc.returncode != 0 and "dataset root does not exist" in proc.stderr and "missing" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_main(["dataset=image_folder", f"dataset.root={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'o2'}"], tmp_path)
    assert proc.returncode != 0 and "no class sub-folders" in proc.stderr


def test_non_writable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = run_main([f"hydra.run.dir={blocker / 'run'}", "task.n_samples=1"], tmp_path)
    assert proc.returncode != 0
    assert "a_file" in proc.stderr
    assert not (blocker.parent / "run").exists()


@pytest.mark.slow
def test_installed_wheel_runs_from_another_directory(tmp_path):
    """Build the wheel, install it into a separate target, run from elsewhere: conf/ ships."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = dist.glob("selfsup_vis-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True, capture_output=True, text=True,
    )
    assert (site / "selfsup_vis" / "conf" / "config.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import selfsup_vis; print(selfsup_vis.__file__)"],
        cwd=elsewhere, env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout
    assert str(site) in where
    proc = run_cli(["task.n_samples=1", "hydra.run.dir=out"], elsewhere, env=env)
    assert_ok(proc)
    assert (elsewhere / "out" / "summary.json").is_file()
    # the console tools a wheel user has instead of scripts/
    for name in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]:
        tool = subprocess.run([str(site / "bin" / name), "--help"], cwd=elsewhere, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=300)
        assert tool.returncode == 0, (name, tool.stderr[-2000:])
        assert (f"usage: {name}" if name != "selfsup-vis" else "Examples:") in tool.stdout, (name, tool.stdout)


def test_messages_point_to_what_a_wheel_user_has():
    """A wheel has no scripts/: no message or docstring of the package sends a user there."""
    said = [f"{p.relative_to(REPO)}: {line.strip()}" for p in (REPO / "selfsup_vis").rglob("*.py")
            for line in p.read_text().splitlines() if "scripts/" in line and "bench_" not in line]
    assert said == []
    with pytest.raises(CueConflictLayoutError, match="selfsup-vis-download-cue-conflict --what stimuli"):
        list_cue_conflict(REPO / "no-such-folder")


def test_pyproject_lists_every_subpackage():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    pkg = REPO / "selfsup_vis"
    found = {
        ".".join(("selfsup_vis", *p.parent.relative_to(pkg).parts)) for p in pkg.rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"


FIXTURES = Path(os.environ.get("SELFSUP_VIS_FIXTURES", REPO.parent / "shared" / "fixtures" / "mmpretrain"))


@pytest.mark.slow
@pytest.mark.skipif(not (FIXTURES / "mae.pth").is_file(), reason=f"no fixture mae.pth in {FIXTURES}")
def test_tasks_run_with_a_real_mmpretrain_checkpoint(tmp_path):
    """The fixture MAE (mmpretrain 1.2 format, 224 px / patch 16, 4 blocks of 64) drives the CLI."""
    arch = ["model=mae_vit-b16", "model.embed_dim=64", "model.depth=4", "model.num_heads=4",
            "model.decoder_embed_dim=32", "model.decoder_depth=2", "model.decoder_num_heads=4",
            f"model.checkpoint={FIXTURES / 'mae.pth'}"]
    out = tmp_path / "rec"
    proc = run_main(["task=reconstruct", *arch, "task.max_images=2", f"hydra.run.dir={out}"], tmp_path)
    assert_ok(proc)
    assert "layout 'mmpretrain MAE'" in proc.stdout + proc.stderr  # the load report
    assert json.loads((out / "summary.json").read_text())["checkpoint"].endswith("mae.pth")
    out = tmp_path / "tsne"
    proc = run_main(["task=tsne", *arch, "task.layers=[block1.mean,norm]", "task.max_samples_per_class=4",
                    "task.backend=pca", f"hydra.run.dir={out}"], tmp_path,
                   env={"SELFSUP_VIS_CACHE": str(tmp_path / "cache")})
    assert_ok(proc)
    assert set(json.loads((out / "summary.json").read_text())["layers"]) == {"block1.mean", "norm"}
