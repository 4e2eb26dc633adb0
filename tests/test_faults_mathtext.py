"""Class and file names are drawn as plain text, never parsed as mathtext (issue 24 item 8): a
class folder named ``$\\undefinedmacro$`` used to stop tsne and browse after the whole
extraction, and ``$...$`` pairs were typeset silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from selfsup_vis.embedding.plots import _class_name
from selfsup_vis.plotting.text import plain
from tests.conftest import assert_ok, run_main

NAMES = ("$\\undefinedmacro$", "cost $5 or $10", "plain")


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in NAMES:
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(root / name / f"${i}$.png")
    return root


def test_plain_text_is_drawn_verbatim():
    fig = Figure()
    for i, name in enumerate(NAMES):
        t = fig.text(0.1, 0.1 * i, plain(name))
    fig.canvas.draw()  # would raise ValueError for the undefined macro if parsed as mathtext
    drawn = [t for t in fig.texts]
    for t, name in zip(drawn, NAMES, strict=True):
        # matplotlib's own preprocessing: not math, and the shown string is the name itself
        shown, math = t._preprocess_math(t.get_text())
        assert math is False and shown == name
    assert _class_name(0, ["$x$"]) == "\\$x\\$"


def test_tsne_and_browse_draw_mathtext_like_class_names(tmp_path):
    data = _folder(tmp_path / "data")
    env = {"SELFSUP_VIS_CACHE": str(tmp_path / "cache")}
    common = ["model=mocov2_tiny", "dataset=image_folder", f"dataset.root={data}", "logger=none"]
    proc = run_main(["task=tsne", *common, "task.layers=[layer4]", "task.perplexity=2",
                     f"hydra.run.dir={tmp_path / 'tsne'}"], tmp_path, env)
    assert_ok(proc)
    assert (tmp_path / "tsne" / "tsne_layer4.png").stat().st_size > 5_000
    proc = run_main(["task=browse", *common, "task.n_samples=3", f"hydra.run.dir={tmp_path / 'browse'}"],
                    tmp_path, env)
    assert_ok(proc)
    assert len(list((tmp_path / "browse" / "browse").glob("*.png"))) >= 3
