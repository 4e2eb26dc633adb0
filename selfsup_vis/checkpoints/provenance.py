"""Where a result's weights came from, so that no figure or number from a randomly initialised
network passes for a trained one.

``Provenance`` is a plain record (``asdict`` → JSON) carried by a task run into summary.json,
every figure's footer and every logger's hyperparameters. ``model_provenance`` describes a
built model's weights from its config and the checkpoint load report: ``"random"``,
``"checkpoint <path> sha256 <short>"`` or ``"timm pretrained <tag>"``, plus the parts (state-dict
prefixes) a checkpoint did not provide. ``check_random_parts`` refuses a run whose task needs
such a part (a MoCo neck for ``task.layers=[neck]``, an MAE decoder for reconstructions) unless
the user opted in with ``model.allow_random_parts=true``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from selfsup_vis.checkpoints.loading import CheckpointError, LoadReport
from selfsup_vis.utils.download import sha256_of

log = logging.getLogger(__name__)

SHORT_HASH = 10
RANDOM = "random"


class RandomPartsError(CheckpointError):
    """A checkpoint lacks weights for a part the task uses; the message names the prefix."""


@dataclass
class Provenance:
    """What a figure or number was computed from. ``weights`` is one of ``"random"``,
    ``"checkpoint <path> sha256 <short>"``, ``"timm pretrained <tag>"`` or a description for
    results not computed from weights (data pipelines, CSV files, training in progress)."""

    task: str
    model: str
    weights: str
    random: bool = False  # the whole model is randomly initialised
    random_parts: list[str] = field(default_factory=list)  # used prefixes without checkpoint weights
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    init_seed: int | None = None  # seed of the random initialisation (random weights only)
    layer: str | None = None
    seed: int | None = None
    dataset: str | None = None
    split: str | None = None
    n: int | None = None
    sources: list[str] = field(default_factory=list)  # input files (e.g. CSVs) when not weights

    @property
    def flag(self) -> str | None:
        """The loud part of the footer: ``RANDOM WEIGHTS`` or ``RANDOM PARTS: neck.``."""
        if self.random:
            return "RANDOM WEIGHTS"
        if self.random_parts:
            return "RANDOM PARTS: " + ", ".join(self.random_parts)
        return None

    def footer(self) -> str:
        """One line for a figure: flag, model, weights, layer, seed, data."""
        weights = self.weights
        if self.checkpoint and weights.startswith("checkpoint "):
            weights = f"checkpoint {_display_name(self.checkpoint)}"
            if self.checkpoint_sha256:
                weights += f" sha256 {self.checkpoint_sha256[:SHORT_HASH]}"
        elif self.random:
            weights = f"no checkpoint, init seed {self.init_seed}" if self.init_seed is not None else "no checkpoint"
        parts = [p for p in (self.flag, f"{self.task}: {self.model}", weights) if p]
        if self.layer:
            parts.append(f"layer {self.layer}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        data = "/".join(str(x) for x in (self.dataset, self.split) if x)
        if data or self.n is not None:
            parts.append(f"{data or 'data'} n={self.n}" if self.n is not None else data)
        if self.sources:
            shown = ", ".join(_display_name(s) for s in self.sources[:3])
            parts.append(f"from {shown}" + (f" (+{len(self.sources) - 3} more)" if len(self.sources) > 3 else ""))
        return " · ".join(parts)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        """Back from ``to_dict`` (e.g. an earlier run's summary.json); unknown keys dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> Provenance:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (``asdict``) plus the flag and footer as written on figures."""
        return {**dataclasses.asdict(self), "flag": self.flag, "footer": self.footer()}


def _display_name(path_or_url: str) -> str:
    s = str(path_or_url).rstrip("/")
    return s.split("?")[0].rsplit("/", 1)[-1] or s


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a local file, memoised per (path, size, mtime); None when it is not a file."""
    p = Path(path).expanduser()
    if not p.is_file():
        return None
    st = p.stat()
    return _sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------------------------------
# Parts a checkpoint did not provide
# ---------------------------------------------------------------------------------------------
def _prefixes(key: str) -> list[str]:
    """``a.b.c`` -> ``["a.", "a.b."]``, shortest first."""
    parts = key.split(".")
    return [".".join(parts[:i]) + "." for i in range(1, len(parts))]


def random_parts(missing: Iterable[str], all_keys: Iterable[str]) -> list[str]:
    """The largest state-dict prefixes (``neck.``, ``decoder.``, ``model.fc.``) all of whose
    tensors are in ``missing``; a lone missing tensor stands for itself (``mask_token``)."""
    missing = set(missing)
    if not missing:
        return []
    under = Counter(p for k in all_keys for p in _prefixes(k))
    missing_under = Counter(p for k in missing for p in _prefixes(k))
    return sorted({next((p for p in _prefixes(k) if missing_under[p] == under[p]), k) for k in missing})


def model_random_parts(model: nn.Module) -> list[str]:
    """Prefixes of ``model`` that its loaded checkpoint did not provide (none without one)."""
    report: LoadReport | None = getattr(model, "load_report", None)
    if report is None or not report.missing:
        return []
    return random_parts(report.missing, model.state_dict().keys())


#: layers whose outputs go through a part outside the backbone / encoder
_LAYER_PARTS = {"feats": ("neck.",), "pre_logits": ("head.pre_logits.", "neck."),
                "logits": ("head.", "neck.")}


def layer_parts(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """State-dict prefixes the requested feature ``layers`` use beyond the encoder: a layer
    named after a top-level module (MoCo's ``neck``), or a classifier's neck / head."""
    children = dict(model.named_children())
    out: list[str] = list(getattr(model, "required_prefixes", ("",)))
    for layer in layers:
        base = layer.split(".", 1)[0]
        if base in children:
            out.append(f"{base}.")
        out += _LAYER_PARTS.get(base, ())
    return list(dict.fromkeys(out))


def _overlaps(part: str, needed: str) -> bool:
    return part.startswith(needed) or needed.startswith(part)


def check_random_parts(model: nn.Module, needed: Sequence[str], why: str,
                       allow: bool = False) -> list[str]:
    """Random parts of ``model`` that the task ``needed`` (prefixes; ``""`` = everything).

    Raises :class:`RandomPartsError` naming the prefixes unless ``allow``; with ``allow`` they
    are returned (to be flagged on figures and in the summary) after a warning."""
    parts = [p for p in model_random_parts(model) if any(_overlaps(p, n) for n in needed)]
    if not parts:
        return []
    report: LoadReport = model.load_report  # type: ignore[assignment]
    count = {p: sum(1 for k in report.missing if k.startswith(p) or k == p) for p in parts}
    listed = ", ".join(f"{p} ({count[p]} tensor{'s' if count[p] != 1 else ''})" for p in parts)
    if not allow:
        raise RandomPartsError(
            f"checkpoint {report.source} has no weights for {listed}, which {why} uses; "
            f"it would run with a randomly initialised {parts[0].rstrip('.')}. Use a checkpoint "
            f"that contains it, or pass model.allow_random_parts=true to run anyway (flagged "
            f"RANDOM PARTS on every figure and in summary.json)")
    log.warning("RANDOM PARTS: checkpoint %s has no weights for %s; %s uses them randomly "
                "initialised (model.allow_random_parts=true)", report.source, listed, why)
    return parts


# ---------------------------------------------------------------------------------------------
# Describing a model's weights
# ---------------------------------------------------------------------------------------------
def _timm_tag(model: nn.Module) -> str:
    inner = getattr(model, "model", model)
    cfg = getattr(inner, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture") or getattr(model, "model_name", "?")
    tag = cfg.get("tag")
    return f"{arch}.{tag}" if tag else str(arch)


def describe_weights(model_cfg: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """``weights`` / ``random`` / ``checkpoint`` / ``checkpoint_sha256`` of a built model."""
    checkpoint = model_cfg.get("checkpoint")
    report: LoadReport | None = getattr(model, "load_report", None)
    if checkpoint and report is not None:
        digest = file_sha256(report.source)
        weights = f"checkpoint {checkpoint}" + (f" sha256 {digest[:SHORT_HASH]}" if digest else "")
        return {"weights": weights, "random": False, "checkpoint": str(checkpoint), "checkpoint_sha256": digest}
    if model_cfg.get("pretrained"):
        return {"weights": f"timm pretrained {_timm_tag(model)}", "random": False}
    return {"weights": RANDOM, "random": True}


def model_provenance(task: str, model_cfg: Mapping[str, Any], model: nn.Module,
                     init_seed: int | None = None, **fields: Any) -> Provenance:
    """The provenance of a built (and loaded) model for ``task``; ``fields`` fill the rest
    (layer, seed, dataset, split, n, random_parts)."""
    name = str(model_cfg.get("name") or getattr(model, "model_name", type(model).__name__))
    desc = describe_weights(model_cfg, model)
    if desc["random"]:
        desc["init_seed"] = init_seed
    return Provenance(task=task, model=name, **desc, **fields)


def warn_if_random(prov: Provenance) -> None:
    """The loud warning for a random-weight run (whole model or parts)."""
    if prov.random:
        log.warning(
            "RANDOM WEIGHTS: model '%s' has no checkpoint (model.checkpoint=null), so every "
            "figure and number of this %s run describes a randomly initialised network (init "
            "seed %s). Pass model.checkpoint=<path or URL> for a trained one.", prov.model,
            prov.task, prov.init_seed)
    elif prov.random_parts:
        log.warning("RANDOM PARTS: %s of model '%s' are randomly initialised in this %s run",
                    ", ".join(prov.random_parts), prov.model, prov.task)


def training_provenance(model: nn.Module, task: str, step: int, epoch: int,
                        **fields: Any) -> Provenance:
    """A figure drawn while ``model`` trains: its weights are those of ``step``, started from
    its checkpoint (file + short hash) or from a random init."""
    report: LoadReport | None = getattr(model, "load_report", None)
    if report is not None:
        digest = file_sha256(report.source)
        init = f"checkpoint {_display_name(report.source)}" + (f" sha256 {digest[:SHORT_HASH]}" if digest else "")
    else:
        init = "random init"
    name = str(getattr(model, "model_name", type(model).__name__))
    return Provenance(task=task, model=name, weights=f"training step {step} (epoch {epoch}) from {init}",
                      **fields)
