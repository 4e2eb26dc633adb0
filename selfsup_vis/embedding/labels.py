"""Labelings of the embedded samples: what a map is coloured by and scored against.

A labeling spec is one string (``task.color_by``, ``task.extra_labels``):

- ``label``: the dataset's labels (the class folder);
- ``shape`` / ``texture``: the shape / texture parts of cue-conflict stimulus names
  (``airplane1-bicycle2.png``; the synthetic ``conflict`` split is named the same way);
- ``regex:<pattern>``: searched in each sample's relative path; the value is the named group
  ``label`` if the pattern has one, else its first group, else the whole match. Paths the
  pattern does not match get the value ``(no match)``, counted in the labeling and flagged;
  a pattern that matches nothing is an error;
- ``csv:<file>:<column>``: a table with a ``path`` column (else its first column) holding the
  samples' relative paths (or unique base names); the value is ``<column>``. A sample missing
  from the table is an error naming it.

CSV values that all parse as numbers make a *numeric* labeling — unless they are at most 20
distinct integers (class ids) — drawn with a continuous colormap and a colorbar and scored by
kNN regression (R²) instead of accuracy.
:func:`parse_labeling_spec` checks a spec before any work (the regex compiles, the CSV file
and column exist); :func:`resolve_labeling` turns it into per-sample values.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from selfsup_vis.data.cue_conflict_categories import parse_stimulus, texture_of
from selfsup_vis.utils.io import save_npy

log = logging.getLogger(__name__)

NO_MATCH = "(no match)"
KINDS = ("label", "shape", "texture", "regex", "csv")
MAX_INTEGER_CLASSES = 20


@dataclass(frozen=True)
class LabelingSpec:
    """A parsed spec: ``kind`` plus the regex pattern or the CSV file and column."""

    spec: str
    kind: str
    pattern: str | None = None
    csv_file: str | None = None
    column: str | None = None


@dataclass
class Labeling:
    """Per-sample values of one labeling.

    Categorical: ``values`` are integer codes into ``classes``. Numeric: ``values`` are floats
    and ``classes`` is None. ``notes`` say what a reader must know (unmatched paths).
    """

    name: str
    values: np.ndarray
    classes: list[str] | None
    notes: list[str] = field(default_factory=list)
    n_unmatched: int = 0

    @property
    def numeric(self) -> bool:
        return self.classes is None

    def categorical(self) -> tuple[np.ndarray, list[str]]:
        """(integer codes, class names) for the files and maps that need classes (CSV ``label``
        / ``class`` columns, interactive maps, projector metadata): a numeric labeling's
        distinct values become its classes, written as numbers."""
        if not self.numeric:
            return np.asarray(self.values, dtype=np.int64), list(self.classes or [])
        distinct, codes = np.unique(self.values, return_inverse=True)
        return codes.astype(np.int64), [f"{v:.6g}" for v in distinct]

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "numeric": self.numeric}
        if self.numeric:
            out.update(min=float(np.min(self.values)), max=float(np.max(self.values)))
        else:
            out.update(n_classes=len(self.classes or []), classes=list(self.classes or []))
        if self.n_unmatched:
            out["n_unmatched"] = self.n_unmatched
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def parse_labeling_spec(spec: str, *, key: str = "task.color_by") -> LabelingSpec:
    """Parse and check ``spec`` (see module docstring); errors name ``key`` and the value."""
    s = str(spec).strip()
    if s in ("label", "shape", "texture"):
        return LabelingSpec(s, s)
    if s.startswith("regex:"):
        pattern = s[len("regex:"):]
        if not pattern:
            raise ValueError(f"{key}={spec!r}: empty regular expression after 'regex:'")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{key}={spec!r}: invalid regular expression: {err}") from None
        return LabelingSpec(s, "regex", pattern=pattern)
    if s.startswith("csv:"):
        rest = s[len("csv:"):]
        if ":" not in rest:
            raise ValueError(f"{key}={spec!r}: expected 'csv:<file>:<column>'")
        file, column = rest.rsplit(":", 1)
        path = Path(file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{key}={spec!r}: CSV file {path} does not exist")
        header = _read_header(path)
        if column not in header:
            raise ValueError(f"{key}={spec!r}: {path} has no column {column!r}; columns: {header}")
        return LabelingSpec(s, "csv", csv_file=str(path), column=column)
    raise ValueError(
        f"{key}={spec!r}: expected one of 'label', 'shape', 'texture', 'regex:<pattern>', "
        "'csv:<file>:<column>'"
    )


def _read_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def _codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(values))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[v] for v in values], dtype=np.int64), classes


def _maybe_numeric(values: Sequence[str]) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return None
    return arr if np.isfinite(arr).all() else None


def _looks_continuous(values: np.ndarray) -> bool:
    """Numbers are a quantity (colormap) unless they are few integers (class ids)."""
    distinct = np.unique(values)
    if distinct.size < 2:
        return False
    return bool((distinct != np.round(distinct)).any() or distinct.size > MAX_INTEGER_CLASSES)


def _stimulus_parts(names: Sequence[str], part: str) -> list[str]:
    out, bad = [], []
    for name in names:
        try:
            stim = parse_stimulus(name)
        except ValueError:
            bad.append(name)
            continue
        out.append(stim.shape if part == "shape" else texture_of(name))
    if bad:
        shown = ", ".join(repr(b) for b in bad[:3])
        raise ValueError(
            f"color by {part!r}: {len(bad)} of {len(names)} sample names are not cue-conflict "
            f"stimulus names '<shape><i>-<texture><j>.png' (e.g. {shown}); use the cue_conflict "
            "dataset, the synthetic 'conflict' split (task.split=conflict) or a regex:/csv: labeling"
        )
    return out


def _regex_values(spec: LabelingSpec, names: Sequence[str]) -> tuple[list[str], int]:
    rx = re.compile(spec.pattern or "")
    out, unmatched = [], 0
    for name in names:
        m = rx.search(name)
        if m is None:
            out.append(NO_MATCH)
            unmatched += 1
        elif "label" in rx.groupindex:
            out.append(m.group("label") or "")
        elif rx.groups:
            out.append(m.group(1) or "")
        else:
            out.append(m.group(0))
    if unmatched == len(names):
        raise ValueError(f"{spec.spec!r} matches none of the {len(names)} sample paths "
                         f"(e.g. {names[0]!r})" if names else f"{spec.spec!r}: no samples")
    return out, unmatched


def _csv_values(spec: LabelingSpec, names: Sequence[str]) -> list[str]:
    path = Path(spec.csv_file or "")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        key = "path" if "path" in fields else fields[0]
        table = {row[key]: row[spec.column or ""] for row in reader}
    by_base: dict[str, str | None] = {}
    for p, v in table.items():
        b = PurePosixPath(p.replace("\\", "/")).name
        by_base[b] = None if b in by_base else v  # None: ambiguous base name
    out, missing = [], []
    for name in names:
        if name in table:
            out.append(table[name])
            continue
        v = by_base.get(PurePosixPath(name).name)
        if v is None:
            missing.append(name)
        else:
            out.append(v)
    if missing:
        raise ValueError(
            f"{spec.spec!r}: {len(missing)} of {len(names)} samples are not in {path} "
            f"(column {key!r}, matched by relative path or unique base name), e.g. "
            + ", ".join(repr(m) for m in missing[:3])
        )
    return out


def resolve_labeling(
    spec: str | LabelingSpec,
    names: Sequence[str],
    labels: np.ndarray,
    classes: Sequence[str],
) -> Labeling:
    """Per-sample values of ``spec`` for samples with relative paths ``names`` and dataset
    ``labels`` (codes into ``classes``)."""
    sp = spec if isinstance(spec, LabelingSpec) else parse_labeling_spec(spec)
    if sp.kind == "label":
        return Labeling("label", np.asarray(labels, dtype=np.int64), list(classes))
    if sp.kind in ("shape", "texture"):
        codes, cls = _codes(_stimulus_parts(names, sp.kind))
        return Labeling(sp.kind, codes, cls)
    if sp.kind == "regex":
        values, unmatched = _regex_values(sp, names)
        codes, cls = _codes(values)
        notes = []
        if unmatched:
            notes.append(f"{unmatched} of {len(names)} paths did not match and are labelled {NO_MATCH!r}")
            log.warning("%s: %s", sp.spec, notes[-1])
        return Labeling(sp.spec, codes, cls, notes, unmatched)
    values = _csv_values(sp, names)
    numeric = _maybe_numeric(values)
    if numeric is not None and _looks_continuous(numeric):
        return Labeling(sp.spec, numeric, None)
    codes, cls = _codes(values)
    return Labeling(sp.spec, codes, cls)


def parse_labeling_specs(color_by: str, extra_labels: Sequence[str]) -> list[LabelingSpec]:
    """``task.color_by`` first, then ``task.extra_labels`` (duplicates dropped), all checked —
    call it at the start of a task, before any work."""
    specs = [parse_labeling_spec(color_by, key="task.color_by")]
    for i, e in enumerate(extra_labels or []):
        sp = parse_labeling_spec(e, key=f"task.extra_labels[{i}]")
        if sp.spec not in {s.spec for s in specs}:
            specs.append(sp)
    return specs


def resolve_labelings(specs: Sequence[LabelingSpec], names: Sequence[str], labels: np.ndarray,
                      classes: Sequence[str]) -> tuple[Labeling, dict[str, Labeling]]:
    """The labeling of ``task.color_by`` (``specs[0]``), which every number, ranking, headline,
    map and file of the run is about, and every other labeling by name — always including the
    dataset's ``label`` — scored from the same neighbours (``quality['labelings']``)."""
    resolved = [resolve_labeling(sp, names, labels, classes) for sp in specs]
    if "label" not in {lab.name for lab in resolved}:
        resolved.append(resolve_labeling(LabelingSpec("label", "label"), names, labels, classes))
    return resolved[0], {lab.name: lab for lab in resolved[1:] if lab.name != resolved[0].name}


#: what summary.json, the log and the figures say when cue-conflict neighbours are excluded
SOURCE_EXCLUSION = ("cue-conflict stimuli: leave-one-out kNN skips neighbours made from the query's shape image "
                    "(<shape><i>) or texture image (<texture><j>)")


def stimulus_sources(names: Sequence[str]) -> np.ndarray | None:
    """(N, 2) ids of the source images of cue-conflict stimuli (``airplane1-bicycle2.png``:
    shape image ``airplane1``, texture image ``bicycle2``); None unless every name is a
    stimulus name. Two stimuli made from the same shape image (or the same texture image)
    share that image's label by construction, so a neighbour of that kind must not vote."""
    parts: list[tuple[str, str]] = []
    for name in names:
        try:
            st = parse_stimulus(name)
        except ValueError:
            return None
        parts.append((f"{st.shape}{st.shape_number}", f"{st.texture}{st.texture_number}"))
    if not parts:
        return None
    ids = {p: i for i, p in enumerate(sorted({x for pair in parts for x in pair}))}
    # a texture image and a shape image with the same name are different images: offset
    return np.array([[ids[a], len(ids) + ids[b]] for a, b in parts], dtype=np.int64)


def write_labels(out: Path, colour: Labeling, dataset_labels: np.ndarray) -> list[Path]:
    """``labels.npy``: the colour labeling's values (codes into its classes, listed in
    summary.json's ``labelings``; floats for a numeric one); when that is not the dataset's
    label, the dataset's labels go to ``dataset_labels.npy``."""
    files = [save_npy(out / "labels.npy", np.asarray(colour.values))]
    if colour.name != "label":
        files.append(save_npy(out / "dataset_labels.npy", np.asarray(dataset_labels, dtype=np.int64)))
    return files


def labeling_values(labelings: dict[str, Labeling]) -> dict[str, np.ndarray]:
    return {name: lab.values for name, lab in labelings.items()}


def scoring(colour: Labeling, others: dict[str, Labeling], names: Sequence[str]) -> dict[str, object]:
    """The keyword arguments of ``layer_maps.map_layer`` that say what a map is scored against:
    the values of the colour labeling (``labels``, whose numbers are the top-level ones), every
    other labeling (``extra_labels``) and, for cue-conflict stimulus names, the source images
    whose neighbours are not counted (``exclude_groups``, ``exclusion_note``)."""
    groups = stimulus_sources(names)
    if groups is not None:
        log.info("kNN numbers: %s", SOURCE_EXCLUSION)
    return {"labels": colour.values, "labeling": colour.name, "extra_labels": labeling_values(others),
            "exclude_groups": groups, "exclusion_note": SOURCE_EXCLUSION if groups is not None else None}


def labeling_numbers(colour: Labeling, others: dict[str, Labeling],
                     qualities: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """summary.json's ``labelings``: every labeling by name, its classes and, per layer, its kNN
    numbers (``qualities``: layer -> quality dict of a map scored with :func:`scoring`)."""
    out: dict[str, dict[str, object]] = {}
    for lab in (colour, *others.values()):
        per = {}
        for layer, q in qualities.items():
            per[layer] = {k: v for k, v in quality_for(q, lab).items()
                          if k.startswith("knn_") and k not in ("knn_feat_space", "knn_feat_queries", "knn_exclusion")}
        out[lab.name] = {**lab.summary(), "colour": lab is colour, "quality": per}
    return out


def quality_for(quality: dict[str, object], labeling: Labeling) -> dict[str, object]:
    """The quality numbers to print on a map coloured by ``labeling``: the top-level numbers
    when they are that labeling's (``quality['labeling']``, the colour labeling of the run),
    else its numbers from ``quality['labelings']``."""
    if quality.get("labeling", "label") == labeling.name:
        return quality
    per = (quality.get("labelings") or {}).get(labeling.name, {})  # type: ignore[union-attr]
    return {**{k: v for k, v in quality.items() if not k.startswith("knn_")}, **per}


def footer_text(method: str, labeling: Labeling, exclusion: str | None = None) -> str:
    """What the figure's footer says: how the map was made (``method``: method, backend,
    perplexity and why it was lowered, iterations, space; see ``backends.describe_method``),
    the labeling that colours it and that every number on it is about, and any neighbours the
    kNN numbers leave out (``exclusion``)."""
    kind = "value (colormap)" if labeling.numeric else f"{len(labeling.classes or [])} classes"
    text = f"{method}\ncolour and numbers: {labeling.name} ({kind})"
    if exclusion:
        text += f" · kNN@k: {exclusion}"
    return text + "".join(f" · {n}" for n in labeling.notes)
