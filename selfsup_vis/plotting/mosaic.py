"""Image grids drawn as one picture.

A grid of N image panels drawn as N matplotlib Axes costs ~10 ms per Axes to build plus a
constrained-layout pass over all of them at every save: a training snapshot of 8 images with
their attention maps (16 panels) spent ~1.3 s in matplotlib. A :class:`Mosaic` composes the
panels into one canvas array (white gaps, a band above each panel for its title) shown in a
single Axes at one canvas pixel per figure pixel, so matplotlib neither resamples nor lays out
the panels; titles, markers and outlines are drawn in canvas pixel coordinates and colour bars
get axes of their own. The same grid then draws in about a fifth of the time.

Panels are resized to the grid's panel size with antialiased bilinear interpolation (images,
continuous maps) or nearest (masks); an overlay is blended as matplotlib blends an ``alpha``
image over an opaque one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from selfsup_vis.plotting.log import new_figure

__all__ = ["Mosaic", "blend", "colorize", "outline", "panel_size", "resize"]

#: the height of one line of text of ``pt`` points, in inches (matplotlib's default line spacing)
LINE_IN_PER_PT = 1.25 / 72
#: the known object mask's outline (attention maps, dense foreground)
MASK_OUTLINE_RGB = (0.0, 1.0, 1.0)


def panel_size(shape: Sequence[int], side: int = 180) -> tuple[int, int]:
    """(height, width) of a panel whose longer side is ``side`` pixels, for an image of ``shape``
    (H, W, ...): the image's aspect ratio kept."""
    H, W = int(shape[0]), int(shape[1])
    return (max(1, round(side * H / W)), side) if W >= H else (side, max(1, round(side * W / H)))


def resize(a: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """(h, w) or (h, w, C) array to ``size`` = (H, W): bilinear with antialiasing (a smaller
    size averages instead of skipping pixels), or nearest for masks and labels."""
    a = np.asarray(a)
    if a.shape[:2] == tuple(size):
        return a.astype(np.float32, copy=False)
    t = torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    if nearest:
        out = F.interpolate(t, size=size, mode="nearest")
    else:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    out = out[0, 0] if a.ndim == 2 else out[0].permute(1, 2, 0)
    return out.numpy()


def colorize(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """(h, w) values -> (h, w, 3) RGB in [0, 1] through ``cmap`` over [vmin, vmax] (NaN: white)."""
    norm = Normalize(vmin, vmax if vmax > vmin else vmin + 1e-12, clip=True)
    rgb = colormaps[cmap](norm(np.asarray(values, dtype=np.float64)))[..., :3]
    rgb[~np.isfinite(values)] = 1.0
    return rgb.astype(np.float32)


def blend(base: np.ndarray, over: np.ndarray, alpha: float) -> np.ndarray:
    """``over`` drawn with opacity ``alpha`` on the opaque ``base`` (both RGB in [0, 1])."""
    return (1.0 - alpha) * np.clip(base, 0, 1) + alpha * np.clip(over, 0, 1)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a boolean mask (in the mask, with a 4-neighbour outside it)."""
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1, mode="edge")
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


class Mosaic:
    """``rows`` x ``cols`` panels of ``panel`` = (height, width) pixels on one canvas.

    ``title_lines`` lines of ``title_pt`` text fit above every panel; ``left_px`` leaves room for
    row labels. Fill panels with :meth:`put`, name them with :meth:`title`, then :meth:`figure`
    makes the Figure (the canvas in one Axes under its suptitle, room for colour bars: add them
    with :meth:`colorbar`); draw markers at :meth:`xy` coordinates on :attr:`ax`."""

    def __init__(self, rows: int, cols: int, panel: tuple[int, int], title_lines: int = 1,
                 title_pt: float = 7.5, gap_px: int = 8, left_px: int = 0, dpi: int = 100) -> None:
        self.rows, self.cols, self.dpi = rows, cols, dpi
        self.ph, self.pw = int(panel[0]), int(panel[1])
        self.gap, self.left = gap_px, left_px
        self.title_pt = title_pt
        self.title_px = math.ceil(title_lines * title_pt * LINE_IN_PER_PT * dpi) if title_lines else 0
        self.height = rows * (self.title_px + self.ph + gap_px)
        self.width = left_px + cols * (self.pw + gap_px)
        self.canvas = np.ones((self.height, self.width, 3), dtype=np.float32)
        self.fig: Figure | None = None
        self.ax: Axes | None = None
        self._texts: list[tuple[float, float, str, dict]] = []

    @property
    def panel(self) -> tuple[int, int]:
        """(height, width) of a panel in pixels."""
        return self.ph, self.pw

    def origin(self, r: int, c: int) -> tuple[int, int]:
        """Canvas (x, y) of panel (r, c)'s top-left pixel."""
        return (self.left + c * (self.pw + self.gap) + self.gap // 2,
                r * (self.title_px + self.ph + self.gap) + self.title_px + self.gap // 2)

    def xy(self, r: int, c: int, x, y, size: tuple[int, int]):  # noqa: ANN001 - scalars or arrays
        """Pixel coordinates (x, y) of an image of ``size`` = (H, W) shown in panel (r, c) ->
        canvas coordinates (pixel centres map to pixel centres)."""
        x0, y0 = self.origin(r, c)
        H, W = size
        return (x0 - 0.5 + (np.asarray(x) + 0.5) * self.pw / W,
                y0 - 0.5 + (np.asarray(y) + 0.5) * self.ph / H)

    def put(self, r: int, c: int, rgb: np.ndarray) -> None:
        """RGB in [0, 1] (any size: resized to the panel) into panel (r, c)."""
        x0, y0 = self.origin(r, c)
        self.canvas[y0:y0 + self.ph, x0:x0 + self.pw] = np.clip(resize(rgb, (self.ph, self.pw)), 0, 1)

    def paint(self, r: int, c: int, mask: np.ndarray, color: Sequence[float]) -> None:
        """Pixels of panel (r, c) where ``mask`` (any size: nearest-resized) holds, in ``color``."""
        x0, y0 = self.origin(r, c)
        m = resize(mask.astype(np.float32), (self.ph, self.pw), nearest=True) > 0.5
        self.canvas[y0:y0 + self.ph, x0:x0 + self.pw][m] = np.asarray(color, dtype=np.float32)[:3]

    def outline_mask(self, r: int, c: int, mask: np.ndarray, color: Sequence[float] = MASK_OUTLINE_RGB) -> None:
        """The boundary of ``mask`` (any size: nearest-resized to the panel), one pixel wide, on
        panel (r, c)."""
        self.paint(r, c, outline(resize(np.asarray(mask, dtype=np.float32), self.panel, nearest=True) > 0.5), color)

    def title(self, r: int, c: int, text: str, **kw) -> None:
        """``text`` centred above panel (r, c) (drawn verbatim: no mathtext)."""
        x0, y0 = self.origin(r, c)
        self._texts.append((x0 + self.pw / 2, y0 - 2, str(text),
                            {"ha": "center", "va": "bottom", "fontsize": self.title_pt, **kw}))

    def row_label(self, r: int, text: str, fontsize: float = 6.0) -> None:
        """``text`` upright along the left edge of row ``r`` (needs ``left_px``)."""
        x0, y0 = self.origin(r, 0)
        self._texts.append((x0 - 3, y0 + self.ph / 2, str(text),
                            {"ha": "right", "va": "center", "rotation": 90, "fontsize": fontsize}))

    def figure(self, suptitle: str = "", suptitle_pt: float = 8.0, right_in: float = 0.0,
               bottom_in: float = 0.0) -> Figure:
        """The Figure: the canvas at one pixel per figure pixel (``dpi``) under a band holding
        ``suptitle``, with ``right_in`` / ``bottom_in`` inches left free for colour bars. Every
        text is drawn verbatim (no mathtext)."""
        top_in = (suptitle.count("\n") + 1) * suptitle_pt * LINE_IN_PER_PT + 0.1 if suptitle else 0.0
        px = lambda inches: math.ceil(inches * self.dpi - 1e-9)  # noqa: E731 - whole pixels: no resampling
        fig = new_figure((self.width + px(right_in)) / self.dpi,
                         (self.height + px(top_in) + px(bottom_in)) / self.dpi, dpi=self.dpi, layout=None)
        w_in, h_in = self.width / self.dpi, self.height / self.dpi
        bottom_in = px(bottom_in) / self.dpi
        W, H = fig.get_figwidth(), fig.get_figheight()
        ax = fig.add_axes((0, bottom_in / H, w_in / W, h_in / H))
        ax.imshow(self.canvas, interpolation="nearest", extent=(-0.5, self.width - 0.5, self.height - 0.5, -0.5))
        ax.set_xlim(-0.5, self.width - 0.5)
        ax.set_ylim(self.height - 0.5, -0.5)
        ax.set_axis_off()
        for x, y, text, kw in self._texts:
            ax.text(x, y, text, parse_math=False, **kw)
        if suptitle:
            fig.text(0.5, 1.0 - 0.04 / H, suptitle, ha="center", va="top", fontsize=suptitle_pt, parse_math=False)
        self.fig, self.ax = fig, ax
        return fig

    def colorbar(self, rect_in: tuple[float, float, float, float], cmap: str, vmin: float, vmax: float,
                 label: str, orientation: str = "vertical") -> Colorbar:
        """A colour bar in its own axes at ``rect_in`` = (left, bottom, width, height) inches."""
        assert self.fig is not None, "call figure() first"
        W, H = self.fig.get_figwidth(), self.fig.get_figheight()
        cax = self.fig.add_axes((rect_in[0] / W, rect_in[1] / H, rect_in[2] / W, rect_in[3] / H))
        cb = self.fig.colorbar(ScalarMappable(Normalize(vmin, vmax), colormaps[cmap]), cax=cax,
                               orientation=orientation)
        # values as they are, on few ticks: an offset ("1e-6+7.9999") lands on the label
        cb.locator = MaxNLocator(nbins=3, steps=[1, 2.5, 5, 10])  # 0..1: 0, 0.5, 1
        cb.formatter = ScalarFormatter(useOffset=False)
        cb.update_ticks()
        cb.set_label(label, fontsize=7)
        cb.ax.tick_params(labelsize=6)
        return cb

    @staticmethod
    def lines_of(texts: Sequence[str]) -> int:
        """The most lines any of ``texts`` has."""
        return max((str(t).count("\n") + 1 for t in texts), default=1)
