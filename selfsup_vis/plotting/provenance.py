"""One footer for every figure: what it was computed from (model, checkpoint + short sha256 or
RANDOM WEIGHTS in red, layer, seed, dataset/split/n). The same text goes into the saved file's
metadata (PNG text chunk, PDF subject, SVG description) by ``save_figure``."""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any, Protocol

from matplotlib.figure import Figure

#: attribute of a Figure holding its provenance (read by ``plotting.log.save_figure``)
FIGURE_ATTR = "selfsup_vis_provenance"
RANDOM_COLOR = "#d00000"


class ProvenanceLike(Protocol):
    """What the footer needs (``selfsup_vis.checkpoints.provenance.Provenance``)."""

    @property
    def flag(self) -> str | None: ...

    def footer(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


#: a figure is often printed one column wide; its footer must still be legible there
COLUMN_WIDTH_IN = 3.4
MIN_PRINTED_PT = 5.0
#: never larger than a title: figures up to 8.1 inches wide meet MIN_PRINTED_PT at column width
MAX_FOOTER_PT = 12.0
_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:~|[A-Za-z]:)?[/\\][^\s·,;()\[\]]+")


def short_paths(text: str) -> str:
    """Absolute paths in ``text`` shown by their file name (``/home/me/runs/x/last.ckpt`` ->
    ``last.ckpt``): a footer names the file; the full path stays in the file's metadata and
    summary.json (``provenance``)."""
    def name(m: re.Match[str]) -> str:
        parts = [p for p in re.split(r"[/\\]", m.group(0)) if p]
        return parts[-1] if parts else m.group(0)
    return _ABS_PATH.sub(name, text)


def footer_fontsize(fig: Figure, fontsize: float = 7.0) -> float:
    """At least ``fontsize``, and large enough that the footer is ``MIN_PRINTED_PT`` points when
    the figure is scaled to one column (``COLUMN_WIDTH_IN``), up to ``MAX_FOOTER_PT`` (the
    figure's own titles' size): a 14-inch strip printed at 3.4 inches shrank a 7 pt footer to
    1.7 pt; grids now wrap to near-square, so few figures are wider than 8 inches."""
    return min(max(fontsize, MIN_PRINTED_PT * fig.get_figwidth() / COLUMN_WIDTH_IN), max(fontsize, MAX_FOOTER_PT))


def add_provenance(fig: Figure, prov: ProvenanceLike, fontsize: float = 7.0) -> str:
    """Draw ``prov``'s footer below ``fig`` (red and bold when weights are random), file names
    instead of absolute paths, sized to stay legible at column width, and attach it to the
    figure for the saved file's metadata. Returns the footer text."""
    footer = short_paths(prov.footer())
    flagged = prov.flag is not None
    size = footer_fontsize(fig, fontsize) + (1 if flagged else 0)
    width_chars = max(30, int(fig.get_figwidth() * 72 / (size * 0.6)))
    text = "\n".join(textwrap.wrap(footer, width_chars)) or footer
    fig.text(0.5, 0.0, text, ha="center", va="top", fontsize=size,
             color=RANDOM_COLOR if flagged else "0.3", fontweight="bold" if flagged else "normal",
             gid="provenance", parse_math=False)  # file names drawn verbatim
    setattr(fig, FIGURE_ATTR, {"footer": footer, "record": prov.to_dict()})
    return footer


def figure_metadata(fig: Figure, fmt: str) -> dict[str, str] | None:
    """Metadata for ``savefig`` in format ``fmt`` from the figure's provenance (None if none)."""
    info = getattr(fig, FIGURE_ATTR, None)
    if not info:
        return None
    fmt = str(fmt).lower()
    if fmt == "png":
        return {"Description": info["footer"], "Provenance": json.dumps(info["record"], default=str)}
    if fmt == "pdf":
        return {"Subject": info["footer"]}
    if fmt in ("svg", "svgz"):
        return {"Description": info["footer"]}
    return None
