"""Reading model-vs-human raw-data CSVs and computing shape bias per model or group.

The numbers come from the same integer formula the ``ShapeBias`` metric uses
(``shape_bias_from_ids``), so the CSV path and the metric agree exactly.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selfsup_vis.data.cue_conflict_categories import CATEGORIES, stimulus_part, texture_of
from selfsup_vis.shape_bias.metric import CSV_COLUMNS, shape_bias_from_ids
from selfsup_vis.utils.io import write_with

HUMANS = "humans"
DEFAULT_PATTERN = "cue-conflict_*.csv"
_FILE_SUBJECT = re.compile(r"^cue-conflict_(?P<subject>.+?)_session[-_]\d+\.csv$")
_NO_RESPONSE = {"", "na", "nan", "none"}


def is_human(subject: str) -> bool:
    """model-vs-human names its human observers ``subject-01`` ... ``subject-10``."""
    return str(subject).startswith("subject-")


def read_csv(path: str | Path) -> pd.DataFrame:
    """One raw-data CSV -> DataFrame with the 8 columns (lower-cased header) plus ``shape``,
    ``texture``, ``response`` (``na`` for no answer), ``stimulus`` and ``file``."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: empty CSV file, expected the header {','.join(CSV_COLUMNS)}") \
            from e
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read as a CSV file: {e}") from e
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; header is {list(df.columns)}, "
            f"expected {list(CSV_COLUMNS)}"
        )
    if df.empty:
        raise ValueError(f"{path}: no rows")
    return _with_derived_columns(df, str(path))


def frame_from_rows(rows: Sequence[dict[str, Any]], source: str = "<metric>") -> pd.DataFrame:
    """Rows as the metric yields them -> the same DataFrame ``read_csv`` gives for a file."""
    df = pd.DataFrame(list(rows), columns=list(CSV_COLUMNS)).astype(str)
    return _with_derived_columns(df, source)


def _with_derived_columns(df: pd.DataFrame, source: str) -> pd.DataFrame:
    for col in ("subj", "object_response", "category", "imagename"):
        df[col] = df[col].str.strip()
    blank = df["imagename"] == ""
    if blank.any():
        raise ValueError(f"{source}: column 'imagename' is empty in row(s) "
                         f"{(np.flatnonzero(blank.to_numpy()) + 2).tolist()[:5]} (file lines)")
    df["shape"] = df["category"].str.lower()
    df["texture"] = df["imagename"].map(texture_of)
    df["stimulus"] = df["imagename"].map(stimulus_part)
    response = df["object_response"].str.lower()
    df["response"] = response.where(~response.isin(_NO_RESPONSE), "na")
    df["file"] = source
    return df


def find_csvs(csv_dir: str | Path, pattern: str = DEFAULT_PATTERN) -> list[Path]:
    """The raw-data CSVs in a directory (sorted); an error lists what is there otherwise."""
    csv_dir = Path(csv_dir)
    if not csv_dir.is_dir():
        raise FileNotFoundError(f"CSV directory not found: {csv_dir}")
    files = sorted(csv_dir.glob(pattern))
    if not files:
        present = sorted(p.name for p in csv_dir.glob("*.csv"))
        raise FileNotFoundError(f"no files matching {pattern!r} in {csv_dir}; .csv files there: "
                                f"{present or 'none'}")
    return files


def read_csv_dirs(csv_dirs: Iterable[str | Path], pattern: str = DEFAULT_PATTERN) -> pd.DataFrame:
    """All raw-data CSVs of several directories in one DataFrame (pandas >= 2: ``concat``)."""
    frames = [read_csv(f) for d in csv_dirs for f in find_csvs(d, pattern)]
    if not frames:
        raise ValueError("no CSV directories given")
    return pd.concat(frames, ignore_index=True)


def subjects(df: pd.DataFrame) -> list[str]:
    """Distinct ``subj`` values in order of appearance."""
    return list(dict.fromkeys(df["subj"]))


def _normalise(name: str) -> str:
    return re.sub(r"[-_ ]", "", name).lower()


def resolve_subject(df: pd.DataFrame, name: str) -> str:
    """A model name given by the user -> the ``subj`` value in the CSVs. Accepts the subj
    value itself, the name in the file name (``simclr-resnet50x1`` for subj
    ``simclr_resnet50x1``) or the same up to ``-``/``_``."""
    subs = subjects(df)
    if name in subs:
        return name
    by_file: dict[str, str] = {}
    for file, subj in df[["file", "subj"]].drop_duplicates().itertuples(index=False):
        match = _FILE_SUBJECT.match(Path(file).name)
        if match:
            by_file.setdefault(match["subject"], subj)
    if name in by_file:
        return by_file[name]
    candidates = {_normalise(s): s for s in subs} | {_normalise(k): v for k, v in by_file.items()}
    if _normalise(name) in candidates:
        return candidates[_normalise(name)]
    files = sorted({Path(f).parent.as_posix() for f in df["file"]})
    models = [s for s in subs if not is_human(s)]
    raise ValueError(f"model {name!r} is not in the CSVs under {files}; models there: {models}"
                     + (" (and human subjects)" if len(models) < len(subs) else ""))


def category_ids(values: Iterable[str], categories: Sequence[str], missing: int) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(categories)}
    return np.array([lookup.get(v, missing) for v in values], dtype=np.int64)


def shape_bias_stats(df: pd.DataFrame, categories: Sequence[str] = CATEGORIES) -> dict[str, Any]:
    """Pooled shape bias of all rows of ``df`` (a model, a subject or a group).

    Returns ``shape_bias``, ``shape_bias_per_category`` (dict), accuracies and ``num_*`` counts.
    """
    decision = category_ids(df["response"], categories, missing=-1)
    shape = category_ids(df["shape"], categories, missing=-3)
    texture = category_ids(df["texture"], categories, missing=-2)
    unknown = sorted(set(df["shape"][shape < 0]))
    if unknown:
        raise ValueError(f"unknown shape categor{'y' if len(unknown) == 1 else 'ies'} {unknown} in "
                         f"column 'category' of {sorted(set(df['file']))}; known: {list(categories)}")
    stats = shape_bias_from_ids(decision, shape, texture, num_categories=len(categories))
    stats["shape_bias_per_category"] = dict(zip(categories, stats["shape_bias_per_category"]))
    return stats


@dataclass
class Group:
    """A decision maker in the plot: one model, or a pool of subjects (the humans)."""

    name: str
    subjects: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    color: Any = None
    marker: str | None = None

    @property
    def shape_bias(self) -> float:
        return self.stats["shape_bias"]

    @property
    def per_category(self) -> dict[str, float]:
        return self.stats["shape_bias_per_category"]


def build_groups(df: pd.DataFrame, models: Sequence[str] | None = None,
                 plotting_names: Sequence[str] | None = None,
                 categories: Sequence[str] = CATEGORIES,
                 include_humans: bool = True) -> list[Group]:
    """Groups to analyse / plot: the requested models (default: every non-human subject), then
    the pooled humans when human subjects are present (so they are drawn last)."""
    if models:
        subs = [resolve_subject(df, m) for m in models]
    else:
        subs = [s for s in subjects(df) if not is_human(s)]
    if plotting_names and len(plotting_names) != len(subs):
        raise ValueError(f"{len(plotting_names)} plotting names for {len(subs)} models {subs}")
    names = list(plotting_names) if plotting_names else subs
    groups = [Group(n, [s]) for n, s in zip(names, subs)]
    humans = [s for s in subjects(df) if is_human(s)]
    if include_humans and humans:
        groups.append(Group(HUMANS, humans))
    if not groups:
        raise ValueError("nothing to analyse: no model and no human subject in the CSVs")
    for g in groups:
        g.stats = shape_bias_stats(df[df["subj"].isin(g.subjects)], categories)
    return groups


def summary_table(groups: Sequence[Group], categories: Sequence[str] = CATEGORIES) -> pd.DataFrame:
    """One row per model or group: name, overall shape bias, one column per category, the
    accuracies and the counts (what ``shape_bias.csv`` holds)."""
    rows = []
    for g in groups:
        row: dict[str, Any] = {"name": g.name, "shape_bias": g.shape_bias}
        row.update({c: g.per_category.get(c, math.nan) for c in categories})
        row.update({k: g.stats[k] for k in ("shape_accuracy", "texture_accuracy", "accuracy")})
        row.update({k: v for k, v in g.stats.items() if k.startswith("num_")})
        row["num_subjects"] = len(g.subjects)
        row["subjects"] = ";".join(g.subjects)
        rows.append(row)
    return pd.DataFrame(rows)


def mean_of_subjects(df: pd.DataFrame, subs: Sequence[str],
                     categories: Sequence[str] = CATEGORIES) -> float:
    """Mean of the individual subjects' shape biases (model-vs-human reports both this and the
    pooled value for the humans)."""
    values = [shape_bias_stats(df[df["subj"] == s], categories)["shape_bias"] for s in subs]
    return float(np.nanmean(values)) if values else math.nan


def write_rows_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write model-vs-human raw-data rows (``CSV_COLUMNS``) atomically."""
    def _write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))  # \r\n, as published
            writer.writeheader()
            writer.writerows(rows)

    return write_with(path, _write)


def csv_name(model: str, dataset: str = "cue-conflict") -> str:
    """model-vs-human's file naming: ``cue-conflict_<model>_session-1.csv``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "model"
    return f"{dataset}_{safe}_session-1.csv"
