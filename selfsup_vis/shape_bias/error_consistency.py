"""Error consistency (Geirhos, Meding & Wichmann, NeurIPS 2020): do two observers get the SAME
trials wrong, beyond what their accuracies alone would predict?

Per trial each observer is correct (response == the trial's ``category``, the shape category
on cue-conflict) or not. ``c_obs`` is the fraction of trials on which both are correct or both
are wrong; with accuracies p1, p2 the consistency expected from independent observers is
``c_exp = p1·p2 + (1 − p1)(1 − p2)``; Cohen's κ = (c_obs − c_exp) / (1 − c_exp), and κ = 1 when
c_obs = 1 (model-vs-human's convention, which also avoids 0/0). model-vs-human compares a model
with each human subject over all trials (the 80 non-conflict ones included, no answer = wrong)
and reports the mean over subjects; humans among themselves: each subject against every other.

Trials are matched by stimulus name (the part of ``imagename`` after the last ``_``), so the
human CSVs' prefixed names line up with the models'."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Consistency:
    """Error consistency of two observers over ``n`` matched trials."""

    observed: float
    expected: float
    kappa: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"observed_consistency": self.observed, "expected_consistency": self.expected,
                "error_consistency": self.kappa, "n_trials": self.n}


def cohens_kappa(correct_a: np.ndarray, correct_b: np.ndarray) -> Consistency:
    """κ of two boolean per-trial correctness vectors (same trials, same order)."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"error consistency needs two equally long 1-D trial vectors, got "
                         f"{a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("error consistency of zero trials is undefined")
    p1, p2 = float(a.mean()), float(b.mean())
    expected = p1 * p2 + (1.0 - p1) * (1.0 - p2)
    observed = float((a == b).mean())
    kappa = 1.0 if observed == 1.0 else (observed - expected) / (1.0 - expected)
    return Consistency(observed, expected, kappa, int(a.size))


def trial_correctness(rows: pd.DataFrame, source: str) -> pd.Series:
    """Per-stimulus correctness of one observer (rows of ``analysis.read_csv`` frames: columns
    ``stimulus``, ``response``, ``shape``). A stimulus seen twice is an error: matching by name
    would then be ambiguous."""
    dup = rows["stimulus"].duplicated()
    if dup.any():
        raise ValueError(f"{source}: stimulus {rows['stimulus'][dup].iloc[0]!r} appears more than "
                         "once; error consistency matches trials by stimulus name")
    return pd.Series((rows["response"] == rows["shape"]).to_numpy(), index=rows["stimulus"].to_numpy())


def consistency_between(a: pd.Series, b: pd.Series, names: tuple[str, str]) -> Consistency:
    """κ over the stimuli both observers saw; refuses when their stimulus sets differ (a model
    run on a subset would otherwise be compared on a biased selection without a word)."""
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    if len(only_a) or len(only_b):
        raise ValueError(
            f"error consistency of {names[0]!r} and {names[1]!r}: their trials differ "
            f"({len(only_a)} stimuli only in the first, e.g. {list(only_a[:2])}; {len(only_b)} "
            f"only in the second, e.g. {list(only_b[:2])})")
    return cohens_kappa(a.to_numpy(), b.reindex(a.index).to_numpy())


@dataclass(frozen=True)
class HumanConsistency:
    """One observer against each human subject: per-subject κ and their mean (the number
    model-vs-human plots), with the spread."""

    name: str
    per_subject: dict[str, Consistency]

    @property
    def mean_kappa(self) -> float:
        values = [c.kappa for c in self.per_subject.values()]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict[str, object]:
        kappas = [c.kappa for c in self.per_subject.values()]
        return {"error_consistency_mean": self.mean_kappa,
                "error_consistency_min": float(min(kappas)) if kappas else math.nan,
                "error_consistency_max": float(max(kappas)) if kappas else math.nan,
                "observed_consistency_mean": float(np.mean(
                    [c.observed for c in self.per_subject.values()])) if kappas else math.nan,
                "expected_consistency_mean": float(np.mean(
                    [c.expected for c in self.per_subject.values()])) if kappas else math.nan,
                "per_subject": {s: c.to_dict() for s, c in self.per_subject.items()}}


def consistency_with_humans(df: pd.DataFrame, observers: dict[str, Sequence[str]],
                            humans: Sequence[str]) -> dict[str, HumanConsistency]:
    """For every observer (name → its model labels in ``df['model']``; one label each) κ with
    each human subject; for a human subject, the other subjects only. ``df`` is the frame of
    ``analysis.read_csv_dirs`` with a ``model`` column (``analysis.model_labels``)."""
    correct = {label: trial_correctness(rows, label) for label, rows in df.groupby("model", sort=False)}
    out: dict[str, HumanConsistency] = {}
    for name, labels in observers.items():
        if len(labels) != 1:
            raise ValueError(f"error consistency is defined per observer; {name!r} pools "
                             f"{len(labels)} of them")
        label = labels[0]
        out[name] = HumanConsistency(name, {
            h: consistency_between(correct[label], correct[h], (label, h))
            for h in humans if h != label})
    return out


def humans_among_themselves(df: pd.DataFrame, humans: Sequence[str]) -> HumanConsistency:
    """Every human subject against every other (each pair once): the humans' own consistency,
    the ceiling a model is read against."""
    correct = {h: trial_correctness(df[df["model"] == h], h) for h in humans}
    pairs = {f"{a} vs {b}": consistency_between(correct[a], correct[b], (a, b))
             for i, a in enumerate(humans) for b in humans[i + 1:]}
    return HumanConsistency("humans", pairs)
