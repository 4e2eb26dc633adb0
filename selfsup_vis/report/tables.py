"""summary.json → tables for the report: whatever a task writes (scalars, per-layer dicts,
per-image lists) becomes readable rows without per-task code."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_ROWS = 200
MAX_LIST = 12


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str | None = None
    css: list[str] = field(default_factory=list)


def fmt(v: Any) -> str:
    """Numbers to 4 significant digits, NaN visible, short lists inline."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return f"{v:.4g}"
    if isinstance(v, list):
        if all(not isinstance(x, dict | list) for x in v):
            shown = ", ".join(fmt(x) for x in v[:MAX_LIST])
            return f"[{shown}{', …' if len(v) > MAX_LIST else ''}]" + (f" ({len(v)})" if len(v) > MAX_LIST else "")
        return f"[{len(v)} items]"
    if isinstance(v, dict):
        return f"{{{len(v)} keys}}"
    return str(v)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool) or (
        isinstance(v, list) and all(not isinstance(x, dict | list) for x in v))


def flat_scalars(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flat_scalars(v, key))
        elif _scalar(v):
            out[key] = v
    return out


def _records_table(title: str, records: list[tuple[str | None, Mapping[str, Any]]], key_name: str) -> Table:
    columns: list[str] = []
    flat = []
    for _, rec in records[:MAX_ROWS]:
        f = flat_scalars(rec)
        flat.append(f)
        columns += [c for c in f if c not in columns]
    keyed = any(k is not None for k, _ in records)
    rows = [([k] if keyed else []) + [fmt(f.get(c)) for c in columns]
            for (k, _), f in zip(records, flat)]
    note = f"first {MAX_ROWS} of {len(records)} rows" if len(records) > MAX_ROWS else None
    return Table(title, ([key_name] if keyed else []) + columns, rows, note)


def summary_tables(summary: Mapping[str, Any]) -> list[Table]:
    """One key/value table of the top-level scalars, then one table per nested block."""
    tables: list[Table] = []
    top = [[k, fmt(v)] for k, v in summary.items() if _scalar(v)]
    if top:
        tables.append(Table("Summary", ["key", "value"], top))
    for key, value in summary.items():
        if isinstance(value, Mapping) and value:
            if all(isinstance(v, Mapping) for v in value.values()):
                tables.append(_records_table(key, [(str(k), v) for k, v in value.items()], key))
            else:
                flat = flat_scalars(value)
                nested = {k: v for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], Mapping)}
                if flat:
                    tables.append(Table(key, ["key", "value"], [[k, fmt(v)] for k, v in flat.items()]))
                for sub, records in nested.items():
                    tables.append(_records_table(f"{key}.{sub}", [(None, r) for r in records], sub))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables.append(_records_table(key, [(None, r) for r in value], key))
    return tables
