"""Interactive 2-D embeddings for report.html, made with Bokeh (inline resources, no CDN).

One ``ColumnDataSource`` holds every layer's coordinates, the class, the path and the
thumbnail (a PNG data URI) of every point, so thumbnails are stored once however many
layers there are, and a box selection in one layer highlights the same images in the
others. Each class is its own renderer, so clicking a legend entry hides that class;
hovering a point shows its thumbnail, class and path; wheel-zoom, pan and reset are on.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from bokeh.embed import components
from bokeh.models import CDSView, ColumnDataSource, GroupFilter, HoverTool, Legend, LegendItem
from bokeh.palettes import Category10, Category20, Turbo256
from bokeh.plotting import figure
from bokeh.resources import Resources
from PIL import Image

#: a transparent 1×1 PNG for points without a sampled thumbnail
BLANK = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42"
         "mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")

TOOLTIP = """
<div style="max-width:260px">
  <img src="@thumb" alt="" style="width:96px;height:96px;image-rendering:pixelated;border:1px solid #ccc">
  <div><b>@cls</b> (label @label)</div>
  <div style="font-size:11px;word-break:break-all">@path</div>
</div>
"""


@dataclass
class EmbeddingTable:
    """What the page needs: per layer the (n, 2) coordinates, and per point its label,
    class name, path and (optionally) thumbnail row."""

    coords: dict[str, np.ndarray]
    labels: np.ndarray
    classes: list[str]
    paths: list[str]
    thumbnails: dict[int, np.ndarray] | None = None  # row -> (h, w, 3) uint8


def png_data_uri(image: np.ndarray) -> str:
    """A PNG data URI of a uint8 image (thumbnails are tiny, so PNG keeps them exact)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="png", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def palette(n: int) -> list[str]:
    if n <= 10:
        return list(Category10[10][:max(n, 3)])[:n]
    if n <= 20:
        return list(Category20[20][:n])
    return [Turbo256[int(i)] for i in np.linspace(0, 255, n)]


def resources_html() -> str:
    """The Bokeh JS inlined into the page (core + WebGL only: ~1.5 MB)."""
    return Resources(mode="inline", components=["bokeh", "bokeh-gl"]).render_js()


def _source(table: EmbeddingTable, max_thumbnail_bytes: int) -> tuple[ColumnDataSource, int]:
    n = len(table.paths)
    thumbs = [BLANK] * n
    used = 0
    for row, image in sorted((table.thumbnails or {}).items()):
        if not 0 <= row < n:
            continue
        uri = png_data_uri(image)
        if used + len(uri) > max_thumbnail_bytes:
            break
        thumbs[row] = uri
        used += len(uri)
    data: dict[str, object] = {
        "label": np.asarray(table.labels, dtype=np.int32),
        "cls": [table.classes[int(x)] if 0 <= int(x) < len(table.classes) else str(int(x))
                for x in table.labels],
        "path": list(table.paths),
        "thumb": thumbs,
    }
    data["label_str"] = [str(x) for x in data["label"]]
    for i, (_, xy) in enumerate(table.coords.items()):
        data[f"x{i}"] = np.ascontiguousarray(xy[:, 0], dtype=np.float32)  # sent as binary
        data[f"y{i}"] = np.ascontiguousarray(xy[:, 1], dtype=np.float32)
    return ColumnDataSource(data=data, name="embedding_points"), sum(u != BLANK for u in thumbs)


def embedding_plots(table: EmbeddingTable, titles: Mapping[str, str] | None = None,
                    max_thumbnail_bytes: int = 15_000_000, size: int = 560
                    ) -> tuple[str, dict[str, str], int]:
    """Bokeh ``(script, {layer: div}, n_thumbnails)`` for every layer of ``table``."""
    n = len(table.paths)
    for layer, xy in table.coords.items():
        if xy.shape != (n, 2):
            raise ValueError(f"layer {layer}: coordinates {xy.shape} do not match {n} points")
    source, n_thumbs = _source(table, max_thumbnail_bytes)
    present = sorted({int(x) for x in table.labels})
    colors = palette(len(present))
    backend = "webgl" if n > 50_000 else "canvas"  # canvas is faster where WebGL is software (headless)
    plots = {}
    for i, layer in enumerate(table.coords):
        p = figure(width=size, height=size - 60, title=(titles or {}).get(layer, layer),
                   tools="pan,wheel_zoom,box_zoom,box_select,reset,save",
                   active_scroll="wheel_zoom", output_backend=backend, match_aspect=True,
                   name=f"embedding_{layer}")
        items = []
        for color, label in zip(colors, present):
            name = table.classes[label] if label < len(table.classes) else str(label)
            view = CDSView(filter=GroupFilter(column_name="label_str", group=str(label)))
            r = p.scatter(f"x{i}", f"y{i}", source=source, view=view, size=6, color=color,
                          alpha=0.8, line_color=None, name=f"class:{name}")
            items.append(LegendItem(label=name, renderers=[r]))
        legend = Legend(items=items, click_policy="hide", label_text_font_size="9pt",
                        glyph_height=12, spacing=0, padding=4)
        p.add_layout(legend, "right")
        p.add_tools(HoverTool(tooltips=TOOLTIP, renderers=p.renderers))
        p.xaxis.visible = p.yaxis.visible = False
        plots[layer] = p
    script, divs = components(plots)
    return script, dict(divs), n_thumbs
