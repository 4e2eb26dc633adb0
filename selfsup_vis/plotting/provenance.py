"""One footer for every figure: what it was computed from (model, checkpoint + short sha256 or
RANDOM WEIGHTS in red, layer, seed, dataset/split/n). The same text goes into the saved file's
metadata (PNG text chunk, PDF subject, SVG description) by ``save_figure``."""

from __future__ import annotations

import json
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


def add_provenance(fig: Figure, prov: ProvenanceLike, fontsize: float = 7.0) -> str:
    """Draw ``prov``'s footer below ``fig`` (red and bold when weights are random) and attach
    it to the figure for the saved file's metadata. Returns the footer text."""
    footer = prov.footer()
    width_chars = max(40, int(fig.get_figwidth() * 72 / (fontsize * 0.6)))
    text = "\n".join(textwrap.wrap(footer, width_chars)) or footer
    flagged = prov.flag is not None
    fig.text(0.5, 0.0, text, ha="center", va="top", fontsize=fontsize if not flagged else fontsize + 1,
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
