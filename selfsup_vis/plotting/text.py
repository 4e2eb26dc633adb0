"""Names from the data drawn as plain text.

Matplotlib typesets any string holding an even number of unescaped ``$`` as mathtext: a class
folder called ``$\\undefinedmacro$`` stops a figure (after the whole extraction) and
``price $5 or $10`` is silently set in italics. Class names, file names, layer names and the
titles built from them go through :func:`plain` before they are drawn: every ``$`` is escaped
(``\\$``), which matplotlib draws as a literal dollar sign and never parses.
"""

from __future__ import annotations


def plain(text: object) -> str:
    """``text`` as a string matplotlib draws verbatim (no mathtext)."""
    return str(text).replace("$", "\\$")
