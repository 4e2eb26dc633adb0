"""Grid layouts and panel titles that stay readable.

A grid of N blocks (an image and its K maps, the views of one sample) drawn one block per row,
or all in one row, is a strip: shrunk to a page or a column its panels and titles vanish.
:func:`block_columns` picks how many blocks go side by side so the whole grid is as close to
square as the count allows; :func:`wrap_label` breaks a long file or class name over lines at
its ``/ _ -`` separators instead of cutting it off (``val_crescent16.`` said nothing).
"""

from __future__ import annotations

import math
import re

__all__ = ["block_columns", "wrap_label"]


def block_columns(n_blocks: int, panels_per_block: int = 1, panel_aspect: float = 1.0,
                  max_columns: int | None = None) -> int:
    """Blocks per row for ``n_blocks`` blocks of ``panels_per_block`` panels (each
    ``panel_aspect`` wide per unit of height) so the grid's width / height is closest to 1;
    among equally square layouts, the one with fewer empty slots."""
    if n_blocks <= 1:
        return 1
    best: tuple[float, int, int] | None = None
    for cols in range(1, min(n_blocks, max_columns or n_blocks) + 1):
        rows = math.ceil(n_blocks / cols)
        ratio = cols * panels_per_block * panel_aspect / rows
        key = (round(abs(math.log(ratio)), 6), rows * cols - n_blocks, -cols)  # ties: landscape
        if best is None or key < best:
            best = key
    return -best[2] if best else 1


def wrap_label(text: object, width: int = 22, max_lines: int = 3) -> str:
    """``text`` on lines of at most ``width`` characters, broken after ``/ _ -`` or a space
    where possible; beyond ``max_lines`` the middle is elided (``…``) so both ends stay."""
    s = str(text)
    if len(s) <= width:
        return s
    # folders and words first; a part still longer than a line breaks at its _ or -
    pieces = [q for p in re.split(r"(?<=[/ ])", s) if p
              for q in (re.split(r"(?<=[_\-])", p) if len(p) > width else [p]) if q]
    lines: list[str] = []
    line = ""
    for piece in pieces:
        while len(piece) > width:  # a piece longer than a line: cut it
            room = width - len(line)
            lines.append(line + piece[:room])
            piece, line = piece[room:], ""
        if len(line) + len(piece) > width:
            lines.append(line)
            line = piece
        else:
            line += piece
    if line:
        lines.append(line)
    lines = [ln.rstrip() for ln in lines if ln.strip()]
    if len(lines) > max_lines:  # keep the start and the end (the file name), elide the middle
        lines = [*lines[: max_lines - 1], "…" + s[-(width - 1):]]
    return "\n".join(lines)
