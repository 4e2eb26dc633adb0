"""Reading model-vs-human raw-data CSVs and computing shape bias per model or group.

The numbers come from the same integer formula the ``ShapeBias`` metric uses
(``shape_bias_from_ids``), so the CSV path and the metric agree exactly.

Raw-data CSVs are recognised by their header (``subj,session,trial,...``), not by a file
name pattern, so model-vs-human's ``cue-conflict_<model>_session-1.csv`` and texture-vs-shape's
``style-transfer-512-nomask-experiment_<model>_session-1.csv`` are both found. A model is
identified by (``subj``, source file): the same file found twice (two folders, same bytes) is
counted once, and two different files with one ``subj`` stay two models with
folder-qualified labels (``folderA/alexnet``, ``folderB/alexnet``), each with a warning.
Human subjects (``subject-XX``) are pooled into one "humans" group.
"""

from __future__ import annotations

import hashlib
import json
import logging
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

log = logging.getLogger(__name__)

HUMANS = "humans"
DEFAULT_PATTERN = "*.csv"
#: ``<experiment>_<subject>_session-<n>.csv`` (model-vs-human and texture-vs-shape naming)
_FILE_SUBJECT = re.compile(r"^(?P<experiment>[^_]+)_(?P<subject>.+?)_session[-_]\d+\.csv$")
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


def has_raw_data_header(path: str | Path) -> bool:
    """Whether the file's first line holds model-vs-human's raw-data columns (any case/order)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline()
    except OSError:
        return False
    header = {c.strip().strip('"').lower() for c in first.split(",")}
    return all(c in header for c in CSV_COLUMNS)


def find_csvs(csv_dir: str | Path, pattern: str = DEFAULT_PATTERN) -> list[Path]:
    """The raw-data CSVs in a directory (sorted): files matching ``pattern`` with the raw-data
    header, or named like one (``<experiment>_<subject>_session-N.csv``, then a bad header is
    an error from :func:`read_csv`). Other CSVs (e.g. a ``shape_bias.csv`` table) are skipped;
    none found is an error that lists what is there."""
    csv_dir = Path(csv_dir)
    if not csv_dir.is_dir():
        raise FileNotFoundError(f"CSV directory not found: {csv_dir}")
    files, skipped = [], []
    for f in sorted(csv_dir.glob(pattern)):
        if not f.is_file():
            continue
        if has_raw_data_header(f) or _FILE_SUBJECT.match(f.name):
            files.append(f)
        else:
            skipped.append(f.name)
    if skipped and files:
        log.info("%s: not raw-data CSVs (no %s header), ignored: %s", csv_dir, ",".join(CSV_COLUMNS),
                 ", ".join(skipped[:10]))
    if not files:
        present = sorted(p.name for p in csv_dir.glob("*.csv"))
        raise FileNotFoundError(f"no files matching {pattern!r} with the raw-data header "
                                f"({','.join(CSV_COLUMNS)}) in {csv_dir}; .csv files there: "
                                f"{present or 'none'}")
    return files


def _content_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_csv_dirs(csv_dirs: Iterable[str | Path], pattern: str = DEFAULT_PATTERN) -> pd.DataFrame:
    """All raw-data CSVs of several directories in one DataFrame; a file found more than once
    (the same bytes in two folders, or a folder given twice) is read once, with a warning."""
    seen: dict[str, Path] = {}
    frames = []
    for d in csv_dirs:
        for f in find_csvs(d, pattern):
            digest = _content_sha(f)
            if digest in seen:
                log.warning("%s is identical to %s: counted once (a duplicate would double its "
                            "decisions)", f, seen[digest])
                continue
            seen[digest] = f
            frames.append(read_csv(f))
    if not frames:
        raise ValueError("no CSV directories given")
    return pd.concat(frames, ignore_index=True)


def _qualified_labels(subj: str, files: Sequence[str]) -> dict[str, str]:
    """Distinct labels for one ``subj`` found in several files: the shortest folder-qualified
    form that tells them apart (``folder/subj``, ``parent/folder/subj``, ...), else the file."""
    paths = [Path(f) for f in files]
    for depth in range(1, max(len(p.parts) for p in paths)):
        labels = {f: "/".join([*p.parent.parts[-depth:], subj]) for f, p in zip(files, paths)}
        if len(set(labels.values())) == len(files):
            return labels
    return {f: f"{subj} ({f})" for f in files}


def model_labels(df: pd.DataFrame, warn: bool = True) -> pd.Series:
    """The decision maker of every row: its ``subj``, folder-qualified when one ``subj`` (not a
    human subject) comes from several different files, which are then kept apart."""
    labels = df["subj"].astype(str).copy()
    pairs = df[["subj", "file"]].drop_duplicates()
    for subj, group in pairs.groupby("subj", sort=False):
        files = list(group["file"])
        if len(files) < 2 or is_human(subj):
            continue
        mapping = _qualified_labels(str(subj), files)
        if warn:
            log.warning("subject %r appears in %d different CSV files; treated as %d models: %s",
                        subj, len(files), len(files),
                        ", ".join(f"{v!r} ({k})" for k, v in mapping.items()))
        rows = df["subj"] == subj
        labels[rows] = df.loc[rows, "file"].map(mapping)
    return labels


def _with_models(df: pd.DataFrame, warn: bool = False) -> pd.DataFrame:
    return df if "model" in df.columns and not df["model"].isna().any() else df.assign(
        model=model_labels(df, warn))


def subjects(df: pd.DataFrame) -> list[str]:
    """Distinct ``subj`` values in order of appearance."""
    return list(dict.fromkeys(df["subj"]))


def _normalise(name: str) -> str:
    return re.sub(r"[-_ ]", "", name).lower()


def resolve_subject(df: pd.DataFrame, name: str) -> str:
    """A model name given by the user -> its model label (see :func:`model_labels`; the
    ``subj`` value unless one subj comes from several files). Accepts the label, the subj
    value, the name in the file name (``simclr-resnet50x1`` for subj ``simclr_resnet50x1``) or
    the same up to ``-``/``_``; a subj shared by several files must be given qualified."""
    df = _with_models(df)
    labels = list(dict.fromkeys(df["model"]))
    if name in labels:
        return name
    candidates: dict[str, list[str]] = {}
    for subj, file, label in df[["subj", "file", "model"]].drop_duplicates().itertuples(index=False):
        match = _FILE_SUBJECT.match(Path(file).name)
        for key in (subj, match["subject"] if match else subj):
            for k in (key, _normalise(key)):
                if label not in candidates.setdefault(k, []):
                    candidates[k].append(label)
    found = candidates.get(name) or candidates.get(_normalise(name))
    if found and len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"model {name!r} is ambiguous: it is the subject of several different "
                         f"CSV files; give one of {found}")
    files = sorted({Path(f).parent.as_posix() for f in df["file"]})
    models = [s for s in labels if not is_human(s)]
    raise ValueError(f"model {name!r} is not in the CSVs under {files}; models there: {models}"
                     + (" (and human subjects)" if len(models) < len(labels) else ""))


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
    subjects: list[str]  # model labels (see ``model_labels``); human subjects for "humans"
    stats: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    color: Any = None
    marker: str | None = None
    #: what a reader must know before trusting the number: "RANDOM WEIGHTS" (from the CSV's
    #: provenance sidecar), "degenerate: ..." (see :func:`degeneracy`)
    flags: list[str] = field(default_factory=list)

    @property
    def random_weights(self) -> bool:
        return any(f.startswith("RANDOM") for f in self.flags)

    @property
    def decisions(self) -> int:
        """Shape or texture decisions on conflict images: what the shape bias rests on."""
        return int(self.stats["num_shape_hits"] + self.stats["num_texture_hits"])

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
    the pooled humans when human subjects are present (so they are drawn last). Models are
    told apart by (subj, file), see :func:`model_labels`."""
    df = df.assign(model=model_labels(df))
    if models:
        subs = [resolve_subject(df, m) for m in models]
    else:
        subs = [s for s in dict.fromkeys(df["model"]) if not is_human(s)]
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
        rows = df[df["model"].isin(g.subjects)]
        g.stats = shape_bias_stats(rows, categories)
        g.files = sorted(set(rows["file"]))
        if g.name != HUMANS:
            g.flags = [f for f in (sidecar_flag(g.files), degeneracy(rows, g.stats)) if f]
            for flag in g.flags:
                log.warning("shape bias of %s: %s", g.name, flag)
    return groups


#: a classifier answering one category for more than this fraction of the images ...
DEGENERATE_TOP_FRACTION = 0.5
#: ... or deciding for shape or texture on fewer than this fraction of the conflict images
DEGENERATE_DECISION_FRACTION = 0.25


def degeneracy(rows: pd.DataFrame, stats: dict[str, Any]) -> str | None:
    """A warning when a shape bias says little about shape vs texture: one answer dominates
    (a constant classifier scores ~0.5 by chance of which cue the answer matches), or few
    conflict trials were decided for either cue (the ratio rests on a handful of trials)."""
    counts = rows["response"][rows["response"] != "na"].value_counts()
    problems = []
    if len(rows) and len(counts):
        top, top_n = str(counts.index[0]), int(counts.iloc[0])
        if top_n / len(rows) > DEGENERATE_TOP_FRACTION:
            problems.append(f"answers {top!r} for {top_n} of {len(rows)} images")
    conflict = int(stats["num_conflict"])
    decided = int(stats["num_shape_hits"] + stats["num_texture_hits"])
    if conflict and decided / conflict < DEGENERATE_DECISION_FRACTION:
        problems.append(f"only {decided} of {conflict} conflict images decided for shape or texture")
    return ("degenerate classifier: " + "; ".join(problems)) if problems else None


def provenance_sidecar(csv_path: str | Path) -> Path:
    """Where task=shape_bias records the provenance of a CSV it wrote (``<stem>.provenance.json``
    beside it), so that a plot made later from the CSV alone still knows random weights."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".provenance.json")


def sidecar_flag(files: Sequence[str]) -> str | None:
    """``RANDOM WEIGHTS`` / ``RANDOM PARTS: ...`` when a CSV's provenance sidecar says so."""
    for f in files:
        side = provenance_sidecar(f)
        if not side.is_file():
            continue
        try:
            flag = json.loads(side.read_text()).get("flag")
        except (OSError, ValueError) as err:
            raise ValueError(f"{side}: unreadable provenance sidecar of {f}: {err}") from err
        if flag:
            return str(flag)
    return None


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


def csv_name(model: str, dataset: str = "cue-conflict") -> str:
    """model-vs-human's file naming: ``cue-conflict_<model>_session-1.csv`` with ``_`` in the
    model name written ``-`` (``simclr_resnet50x1`` -> ``cue-conflict_simclr-resnet50x1_...``),
    so our CSV and model-vs-human's for one model share a name instead of doubling it."""
    safe = re.sub(r"[^A-Za-z0-9.-]+", "-", model).strip("-") or "model"
    return f"{dataset}_{safe}_session-1.csv"
