"""Figures readable as printed: grids wrap to near-square instead of strips, names wrap instead
of being cut, browse blocks name the class, thumbnails keep their aspect ratio, footers name
files (not absolute paths) at a size legible at column width."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from selfsup_vis.attention.plots import grid_figure as attention_grid
from selfsup_vis.attention.plots import image_figure
from selfsup_vis.checkpoints.provenance import Provenance
from selfsup_vis.embedding.thumbnails import draw_thumbnails, thumbnail_array
from selfsup_vis.models import model_pipeline
from selfsup_vis.plotting.layout import block_columns, wrap_label
from selfsup_vis.plotting.log import new_figure
from selfsup_vis.plotting.provenance import (
    COLUMN_WIDTH_IN,
    MIN_PRINTED_PT,
    add_provenance,
    short_paths,
)
from selfsup_vis.report.thumbnails import make_thumbnails
from selfsup_vis.views.plots import grid_figure as browse_grid
from tests.conftest import compose_cfg

NAMES = ["0_circle/val_circle1.png", "36_triangle/val_triangle5.png", "127_crescent/val_crescent16.png",
         "109_diamond/val_diamond14.png", "54_star/val_star7.png", "73_cross/val_cross10.png",
         "91_hexagon/val_hexagon12.png", "18_square/val_square3.png"]


def _aspect(fig) -> float:  # noqa: ANN001 - a matplotlib Figure, as saved (bbox tight)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40, bbox_inches="tight")
    w, h = Image.open(buf).size
    return w / h


@pytest.mark.parametrize("per", [1, 2, 3, 5])
def test_block_columns_is_never_a_strip(per: int) -> None:
    for n in range(1, 25):
        cols = block_columns(n, per)
        rows = math.ceil(n / cols)
        ratio = cols * per / rows
        # the best a count allows: one step more or fewer columns is not squarer
        for other in (cols - 1, cols + 1):
            if 1 <= other <= n:
                assert abs(math.log(ratio)) <= abs(math.log(other * per / math.ceil(n / other))) + 1e-9
    assert block_columns(8, 2) == 2  # 8 images with one map each: 4 x 4 panels, not 2 x 8


def test_wrap_label_keeps_every_character_and_the_file_name() -> None:
    for name in NAMES:
        wrapped = wrap_label(name, 18)
        assert wrapped.replace("\n", "") == name and all(len(x) <= 18 for x in wrapped.split("\n"))
    assert wrap_label("36_triangle/val_triangle5.png", 22) == "36_triangle/\nval_triangle5.png"
    long = wrap_label("/".join(["folder"] * 20) + "/the_image.png", 16, max_lines=3)
    assert long.count("\n") == 2 and long.endswith("the_image.png") and "…" in long


def test_attention_grids_are_near_square_with_whole_titles() -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32, 3)) for _ in NAMES]
    maps = [rng.random((1, 32, 32)) for _ in NAMES]
    fig = attention_grid(images, maps, [["mean"]] * len(NAMES), NAMES, "mae · cls_attention", None)
    assert 0.6 < _aspect(fig) < 1.6  # was 8 x 2 blocks: 3.4
    titles = [t.get_text().replace("\n", "") for ax in fig.axes for t in ax.texts]  # one canvas: titles are texts
    assert set(NAMES) <= set(titles)  # none cut ("val_crescent16." before)
    heads = image_figure(images[0], rng.random((5, 32, 32)), [f"head{i}" for i in range(4)] + ["mean"],
                         "t", None)
    assert 0.75 < _aspect(heads) < 1.8  # 6 panels as 3 x 2 (was 5 + 1)


def test_browse_grid_names_each_sample_and_its_class() -> None:
    cfg = compose_cfg(["task=browse", "model=mocov2_tiny"], activate=False)
    pipeline = model_pipeline(cfg.model)
    dm = instantiate(cfg.dataset)
    dm.configure(train=pipeline, eval=pipeline)
    data = dm.dataset(dm.train_split, pipeline)
    samples = [(f"#{i} {data.classes[data[i]['label']]}", data[i]) for i in range(6)]
    fig = browse_grid(samples, pipeline, "synthetic/train")
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {label for label, _ in samples} <= texts
    assert all(label.split(" ", 1)[1] in data.classes for label, _ in samples)
    assert 0.6 < _aspect(fig) < 1.7  # 6 samples x 2 views was one tall column (0.33)


def test_thumbnails_keep_the_aspect_ratio() -> None:
    wide = Image.fromarray(np.zeros((50, 200, 3), dtype=np.uint8))
    thumb = thumbnail_array(wide, 48)
    assert thumb.shape == (12, 48, 3)  # the whole image, 4:1, not a centre crop
    fig = new_figure(4, 4)
    ax = fig.add_subplot()
    ax.scatter([0, 1], [0, 1])
    draw_thumbnails(ax, np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([0]), [thumb], grid=2)
    x0, x1, y0, y1 = ax.get_images()[0].get_extent()
    assert (x1 - x0) / abs(y1 - y0) == pytest.approx(4.0)
    boxed = make_thumbnails(lambda i: wide, [0], 32)[0]  # report / TensorBoard sprite: letterboxed
    rows_with_image = np.flatnonzero((boxed != 255).any(axis=(1, 2)))
    assert len(rows_with_image) == 8 and boxed.shape == (32, 32, 3)


def test_footer_names_files_and_stays_legible_at_column_width() -> None:
    prov = Provenance(task="pretrain", model="mae", weights="trained by this run from checkpoint "
                      "/home/me/runs/2026-12-04/checkpoints/last.ckpt sha256 0123abcd", seed=0,
                      sources=["/data/pets/val/cat/cat1.png"])
    assert "/home/me" not in short_paths(prov.footer()) and "last.ckpt" in short_paths(prov.footer())
    assert short_paths("from https://host/x/mae.pth and synthetic/val") == "from https://host/x/mae.pth and synthetic/val"
    for width in (3.0, 6.5, 8.0):
        fig = new_figure(width, 3)
        footer = add_provenance(fig, prov)
        assert "/home/me" not in footer and "last.ckpt" in footer
        (text,) = [t for t in fig.texts if t.get_gid() == "provenance"]
        printed = text.get_fontsize() * COLUMN_WIDTH_IN / max(width, COLUMN_WIDTH_IN)
        assert printed >= MIN_PRINTED_PT - 1e-9, (width, text.get_fontsize())
        assert "/home/me" in fig.selfsup_vis_provenance["record"]["weights"]  # the full path stays in the metadata


def test_mosaic_shows_each_panel_pixel_for_pixel_with_its_outline_and_coordinates() -> None:
    from selfsup_vis.plotting.mosaic import Mosaic, blend, outline

    rng = np.random.default_rng(0)
    panels = [rng.random((20, 30, 3)).astype(np.float32) for _ in range(4)]
    mo = Mosaic(2, 2, (20, 30), title_lines=1, left_px=5)
    for i, p in enumerate(panels):
        mo.put(*divmod(i, 2), p)
    square = np.zeros((20, 30), bool)
    square[5:15, 10:20] = True
    mo.paint(1, 1, outline(square), (0.0, 1.0, 1.0))
    mo.title(0, 0, "$\\undefinedmacro$ costs $5")  # data names are drawn verbatim, never as mathtext
    fig = mo.figure("a title\nof two lines", right_in=0.5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=mo.dpi)  # no bbox: the canvas sits at the figure's bottom left
    shown = np.asarray(Image.open(buf).convert("RGB")).astype(np.float32) / 255
    assert shown.shape[:2] == (round(fig.get_figheight() * mo.dpi), round(fig.get_figwidth() * mo.dpi))
    canvas = shown[shown.shape[0] - mo.height:, :mo.width]
    x0, y0 = mo.origin(0, 1)
    assert np.abs(canvas[y0:y0 + 20, x0:x0 + 30] - panels[1]).max() <= 1 / 255 + 1e-6  # not resampled
    x1, y1 = mo.origin(1, 1)
    ring = canvas[y1:y1 + 20, x1:x1 + 30]
    assert np.allclose(ring[5, 10:20], (0, 1, 1), atol=1 / 255) and np.allclose(ring[9, 12], panels[3][9, 12], atol=1 / 255)
    # a pixel centre of a (10, 15) map shown in panel (1, 0) lands on the centre of its 2 x 2 block
    x, y = mo.xy(1, 0, 0, 0, (10, 15))
    assert (float(x), float(y)) == (mo.origin(1, 0)[0] + 0.5, mo.origin(1, 0)[1] + 0.5)
    assert np.allclose(blend(np.zeros((1, 1, 3)), np.ones((1, 1, 3)), 0.25), 0.25)
    assert "$\\undefinedmacro$ costs $5" in {t.get_text() for t in mo.ax.texts}
