"""Every command of README.md's shell blocks, read as a shell reads it.

The commands are taken from the ```bash blocks, joined over ``\\``-newlines and split with
``shlex`` in POSIX mode, so a quoting mistake (a regex or a Hydra list the shell or Hydra would
mangle) fails here as it would in a terminal. Every ``python -m selfsup_vis`` / ``selfsup-vis``
command is then composed by Hydra and its values checked (``validate``) exactly as the CLI does;
the ones that need no checkpoint, GPU, Slurm or earlier run are also run, at tiny sizes
(appended overrides), through the real ``main()``. Data the README names under ``/data`` is
swapped for small folders made here; placeholders (``<run>``, ``<date>``) for a folder, and a
``...`` (the README's "the rest as above") is dropped. ``make`` targets and Apple's
``embedding-atlas`` are not ours to run.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import socket
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from selfsup_vis.config import compose
from selfsup_vis.config.validate import validate
from tests.conftest import DATA, REPO, assert_ok, run_main

README = REPO / "README.md"
SELF = ("python", "-m", "selfsup_vis")
#: programs README commands may start with that are not composed here, and why
NOT_OURS = {"make": "Makefile targets (make demo / make test run the demo and the suite)",
            "embedding-atlas": "Apple's tool, a separate install"}
#: the one synopsis line whose <...> are the groups' names, not values
MISSING_KEY = object()
SYNOPSIS = "task=<task> model=<model> dataset=<dataset> logger=<logger> trainer=<trainer>"


@dataclass(frozen=True)
class Command:
    line: int  # where it starts in README.md
    text: str  # as written
    argv: tuple[str, ...]  # as a POSIX shell splits it

    @property
    def id(self) -> str:
        return f"L{self.line}"


def _join_continuations(text: str) -> str:
    """Remove backslash-newline outside single quotes, as the shell does before splitting
    (``shlex`` would keep the newline as a word of its own)."""
    out, quote, i = [], None, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            if text[i + 1:i + 2] != "\n":
                out.append(text[i:i + 2])
            i += 2
            continue
        if c in "'\"" and quote in (None, c):
            quote = None if quote == c else c
        out.append(c)
        i += 1
    return "".join(out)


def readme_commands(text: str | None = None) -> list[Command]:
    """The shell commands of the ```bash / ```sh blocks, one per command (a command ends at a
    newline outside quotes and not after a backslash)."""
    text = README.read_text() if text is None else text
    commands: list[Command] = []
    for block in re.finditer(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, re.S | re.M):
        first = text[:block.start()].count("\n") + 2
        buf, start = "", None
        for i, line in enumerate(block.group(1).splitlines(keepends=True)):
            if start is None and (not line.strip() or line.lstrip().startswith("#")):
                continue
            start = first + i if start is None else start
            buf += line
            if buf.endswith("\\\n"):
                continue
            joined = _join_continuations(buf)
            try:
                argv = shlex.split(joined, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            commands.append(Command(start, buf.rstrip("\n"), tuple(argv)))
            buf, start = "", None
        assert start is None, f"README.md:{start}: unterminated command {buf!r}"
    return commands


def _cli_args(cmd: Command) -> list[str] | None:
    if cmd.argv[:3] == SELF:
        return list(cmd.argv[3:])
    if cmd.argv[0] == "selfsup-vis":
        return list(cmd.argv[1:])
    return None


COMMANDS = readme_commands()
CLI = [c for c in COMMANDS if _cli_args(c) is not None and SYNOPSIS not in c.text]


def _entry_points() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_readme_commands_are_found_and_all_known() -> None:
    assert len(CLI) >= 40, [c.text for c in COMMANDS]
    programs = {c.argv[0] if c.argv[0] != "python" else " ".join(c.argv[:3]) for c in COMMANDS}
    known = {" ".join(SELF), "python -m selfsup_vis.report", *_entry_points(), *NOT_OURS}
    assert programs <= known, f"a README program no test runs: {sorted(programs - known)}"
    assert all(" ".join(c.argv[:2]) != "python scripts" for c in COMMANDS if c.argv[0] == "python"), \
        "a wheel user has no scripts/: use the console entry points"


def test_a_shell_quoting_mistake_is_caught() -> None:
    """The parser reads what a shell reads: the old, unquoted-for-Hydra regex fails to compose."""
    bad = readme_commands("```bash\npython -m selfsup_vis task=tsne \\\n    'task.color_by=regex:_(day|night)\\.'\n```\n")
    assert bad[0].argv == (*SELF, "task=tsne", "task.color_by=regex:_(day|night)\\.")
    with pytest.raises(Exception, match="mismatched input"):
        compose(list(bad[0].argv[3:]))
    multi = readme_commands("```bash\npython -m selfsup_vis 'task.models=[{model: a},\n  {model: b}]'\n```\n")
    assert multi[0].argv[3] == "task.models=[{model: a},\n  {model: b}]"


# --------------------------------------------------------------------------------------------
# Files the commands name
# --------------------------------------------------------------------------------------------
#: what the workspace holds (relative paths), so which commands can run is known at collection
PETS = [f"pets/{cls}/{cls}{i}_{'day' if i % 2 else 'night'}.png" for cls in ("cat", "dog") for i in range(6)]
LAYOUT = [*PETS, "meta.csv", "cat.jpg", "dog.png", "feats.npy", "labels.npy", "in1k_feats/part_0.npy",
          "train.csv", "classnames.txt", "mask.npy", "raw-data/cue-conflict", "outputs/shape_bias/run"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with small stand-ins for what the README's commands read: an image
    folder (for /data/pets, /data/imgs; file names match the README's `_(day|night)` regex), a
    metadata CSV, precomputed features and labels, a mask, two images, model-vs-human's CSVs
    (linked from the shared data) and a shape_bias run's CSV."""
    root = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(0)
    for rel in PETS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / rel)
    (root / "meta.csv").write_text("path,brightness\n" + "".join(f"{rel[5:]},{rng.random():.3f}\n" for rel in PETS))
    for name in ("cat.jpg", "dog.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / name)
    np.save(root / "feats.npy", rng.normal(size=(60, 16)).astype(np.float32))
    np.save(root / "labels.npy", np.repeat(np.arange(3), 20))
    (root / "in1k_feats").mkdir()
    np.save(root / "in1k_feats" / "part_0.npy", rng.normal(size=(40, 16)).astype(np.float32))
    (root / "train.csv").write_text("label\n" + "".join(f"{i % 2}\n" for i in range(40)))
    (root / "classnames.txt").write_text("a\nb\n")
    np.save(root / "mask.npy", np.zeros((14, 14), dtype=bool))
    raw = DATA / "model-vs-human" / "raw-data" / "cue-conflict"
    (root / "raw-data").mkdir()
    (root / "outputs" / "shape_bias" / "run").mkdir(parents=True)
    if raw.is_dir():
        (root / "raw-data" / "cue-conflict").symlink_to(raw)
        csv = raw / "cue-conflict_resnet50_session-1.csv"
        (root / "outputs" / "shape_bias" / "run" / "cue-conflict_my-model_session-1.csv").write_text(
            csv.read_text().replace("resnet50", "my-model"))
    return root


def _localise(args: list[str]) -> list[str]:
    """The README's /data paths, placeholders and elisions made real (relative to the
    workspace, or the shared data)."""
    swaps = [("/data/pets_masks", "pets"), ("/data/pets/val", "pets"), ("/data/pets", "pets"),
             ("/data/imgs", "pets"), ("/data/in1k_feats/", "in1k_feats"), ("/data/imagenet", "pets"),
             ("/data/cue-conflict", str(DATA / "cue-conflict")),
             ("/data/model-vs-human", str(DATA / "model-vs-human")), ("<run>", "run"), ("<date>", "run")]
    out = []
    for arg in args:
        if arg == "...":
            continue
        for old, new in swaps:
            arg = arg.replace(old, new)
        out.append(arg)
    return out


def _single_run(args: list[str]) -> tuple[bool, list[str]]:
    """(is a sweep, the overrides of its first job): Hydra's own parser expands the sweep."""
    sweep = "-m" in args or "--multirun" in args
    parsed = OverridesParser.create().parse_overrides([a for a in args if a not in ("-m", "--multirun")])
    first = []
    for o in parsed:
        if o.is_sweep_override():
            first.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
        else:
            first.append(o.input_line)
    return sweep, first


# --------------------------------------------------------------------------------------------
# Every command composes and passes the value checks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", CLI, ids=[c.id for c in CLI])
def test_readme_command_composes(cmd: Command, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = _localise(_cli_args(cmd) or [])
    if args == ["--help"]:
        proc = run_main(args, workspace)
        assert_ok(proc)
        return
    monkeypatch.chdir(workspace)
    _, overrides = _single_run(args)
    cfg = compose(overrides, run_dir=workspace / "runs" / cmd.id)
    validate(cfg)
    for arg in overrides:  # every key the command sets is in the job's config
        key = arg.partition("=")[0]
        if "/" not in key and "." in key and not key.startswith(("hydra.", "+", "~")):
            assert OmegaConf.select(cfg, key, default=MISSING_KEY) is not MISSING_KEY, f"{arg} got lost"


# --------------------------------------------------------------------------------------------
# A representative subset runs, at tiny sizes
# --------------------------------------------------------------------------------------------
#: appended to a command (later overrides win in Hydra) so it runs in seconds on a CPU
TINY = {
    "browse": ["task.n_samples=2"],
    "tsne": ["task.max_samples_per_class=3", "task.backend=pca"],
    "reconstruct": ["task.max_images=2"],
    "attention": ["task.max_images=2"],
    "dense": ["task.max_images=2"],
    "compare_embeddings": ["task.max_samples_per_class=3", "task.backend=pca"],
    "pretrain": ["trainer.max_epochs=1", "trainer.limit_train_batches=2"],
}
#: what a command needs that a CPU-only test has not: it is composed, not run
NEEDS = {"model.checkpoint=": "a checkpoint file", "model.pretrained=true": "downloaded weights",
         "trainer=gpu": "a GPU", "trainer=ddp": "several devices",
         "hydra/launcher=": "launcher processes (tests/test_slurm.py runs those sweeps)"}
_FILE = re.compile(r"[\w.-]*/[\w./-]*|[\w-]+\.(?:pth|ckpt|npy|csv|jpg|png|txt)$")


def _in_workspace(path: str) -> bool:
    return Path(path).is_absolute() and Path(path).exists() or any(
        rel == path.rstrip("/") or rel.startswith(path.rstrip("/") + "/") for rel in LAYOUT)


def _why_not_run(args: list[str]) -> str | None:
    """A reason not to run a command here, or None; a file or folder it names that is not in the
    workspace (an earlier run: ``outputs/tsne/<run>``) is one."""
    for arg in args:
        for needle, what in NEEDS.items():
            if arg.startswith(needle):
                return what
        key, _, value = arg.partition("=")
        if re.search(r"checkpoint: (?!null)", value):
            return "a checkpoint file"
        if key.startswith("hydra."):
            continue
        for item in re.split(r"[\[\],]", value):
            if _FILE.fullmatch(item.strip()) and not _in_workspace(item.strip()):
                return f"{item.strip()} (an earlier run's output)"
    return None


def _task(args: list[str]) -> str:
    return next((a.partition("=")[2] for a in args if a.startswith("task=")), "browse")


def _runnable() -> Iterator:
    for cmd in CLI:
        args = _cli_args(cmd) or []
        if args == ["--help"] or _why_not_run(_localise(args)):
            continue
        yield pytest.param(cmd, id=cmd.id)


RUNNABLE = list(_runnable())


def test_a_representative_subset_runs() -> None:
    tasks = {_task(_cli_args(p.values[0]) or []) for p in RUNNABLE}
    assert {"browse", "tsne", "reconstruct", "attention", "dense", "pretrain", "shape_bias",
            "plot_shape_bias", "compare_embeddings"} <= tasks, tasks


@pytest.mark.slow  # 3-10 s each at these sizes (CPU, 2 cores)
@pytest.mark.parametrize("cmd", RUNNABLE)
def test_readme_command_runs(cmd: Command, workspace: Path, tmp_path: Path) -> None:
    args = _localise(_cli_args(cmd) or [])
    if any("cue-conflict" in a or "model-vs-human" in a for a in args) and not (DATA / "cue-conflict").is_dir():
        pytest.skip(f"shared data not found: {DATA}")
    sweep, _ = _single_run(args)
    where = f"hydra.sweep.dir={tmp_path / 'sweep'}" if sweep else f"hydra.run.dir={tmp_path / 'run'}"
    tiny = TINY.get(_task(args), [])
    if _task(args) == "pretrain" and not any(a.startswith("callbacks") for a in args):
        tiny = [*tiny, "callbacks=none"]  # a command that sets callbacks.<x> keeps the group
    proc = run_main([*args, *tiny, where], workspace,
                    env={"SELFSUP_VIS_CACHE": str(tmp_path / "cache")})
    assert_ok(proc)
    summaries = list(tmp_path.rglob("summary.json"))
    assert summaries, f"no summary.json under {tmp_path}"
    color_by = next((a.partition("=")[2] for a in args if a.startswith("task.color_by=")), "")
    if color_by.startswith('"regex:'):  # the pattern reached the task whole, quotes removed
        labeling = json.loads(summaries[0].read_text())["labelings"][color_by.strip('"')]
        assert labeling["classes"] == ["day", "night"], labeling


# --------------------------------------------------------------------------------------------
# The other console tools (pyproject [project.scripts]) and python -m selfsup_vis.report
# --------------------------------------------------------------------------------------------
TOOLS = [c for c in COMMANDS if c.argv[0].startswith("selfsup-vis-") or c.argv[:3] == (*SELF[:2], "selfsup_vis.report")]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tool_marks(cmd: Command) -> list:
    return [pytest.mark.slow] if cmd.argv[:3] == (*SELF[:2], "selfsup_vis.report") else []


@pytest.mark.parametrize("cmd", [pytest.param(c, id=c.id, marks=_tool_marks(c)) for c in TOOLS])
def test_readme_tool_command(cmd: Command, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """Each tool's README line through the function its entry point names: the plot runs on
    model-vs-human's CSVs, the download (no network here) fails with a message, not a traceback;
    the report command rebuilds report.html of a run / a sweep made here first."""
    monkeypatch.chdir(tmp_path)
    args = _localise(list(cmd.argv[1:]))
    if cmd.argv[0] == "python":  # python -m selfsup_vis.report <run dir or sweep dir> [--max-mb N]
        target = tmp_path / args[2]
        sweep = target.parts[-3] == "multirun"
        job = ["-m", "task.seed=0,1", f"hydra.sweep.dir={target}"] if sweep else [f"hydra.run.dir={target}"]
        assert_ok(run_main([*job[:1], "task=browse", "task.n_samples=1", *job[1:]], tmp_path))
        report = importlib.import_module("selfsup_vis.report.__main__")
        (target / "report.html").unlink(missing_ok=True)
        report.main(args[2:])
        assert (target / ("sweep_summary.json" if sweep else "summary.json")).is_file()
        assert (target / "report.html").is_file()
        assert capsys.readouterr().out.strip().endswith("report.html")
        return
    monkeypatch.chdir(workspace)
    module, _, func = _entry_points()[cmd.argv[0]].partition(":")
    main = getattr(importlib.import_module(module), func)
    if cmd.argv[0].endswith("download-cue-conflict"):
        code = main([*[a.replace("/data/cue-conflict", str(tmp_path / "cc")) for a in args],
                     "--stimuli-url", f"http://127.0.0.1:{_closed_port()}/stimuli.zip", "--timeout", "2"])
        err = capsys.readouterr().err
        assert code == 1 and "error:" in err and "Traceback" not in err, err
        return
    if not (DATA / "model-vs-human").is_dir():
        pytest.skip(f"shared data not found: {DATA}")
    out = tmp_path / "out"
    code = main([a if a != "out" else str(out) for a in args])
    assert code == 0, capsys.readouterr().err
    assert (out / "shape_bias.csv").is_file() and (out / "summary.json").is_file()
