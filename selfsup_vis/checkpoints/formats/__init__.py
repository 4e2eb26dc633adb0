"""Released self-supervised checkpoint formats, one module per family, and the loader that
detects which one a file is.

Detection looks at the container first (a training checkpoint with ``teacher`` / ``student``,
``state_dict`` with ``module.base_encoder``, ``target_encoder``, ``{'model': ...}``, a plain
state dict, a Hugging Face folder) and then at identifying keys; the load report says which
format was found, which part was used (e.g. the teacher backbone) and what was ignored (heads,
optimizer, predictor, the other network). A checkpoint of another family than the model's is
refused with both names.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup_vis.checkpoints.formats import dino, dinov2, dinov3, hf, ijepa, mae_official, mocov3
from selfsup_vis.checkpoints.formats.base import CheckpointFormat, Section
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.checkpoints.loading import (
    CheckpointError,
    LoadReport,
    convert_state_dict,
    resolve_checkpoint,
    safe_load,
)

log = logging.getLogger(__name__)

#: most specific first (a training checkpoint before the plain state dict it contains)
FORMATS: tuple[CheckpointFormat, ...] = (
    *dino.FORMATS, *dinov2.FORMATS, *dinov3.FORMATS, *mocov3.FORMATS, *ijepa.FORMATS,
    *mae_official.FORMATS, *hf.FORMATS)
BY_NAME = {f.name: f for f in FORMATS}
#: training-checkpoint entries that are not networks, with why they are skipped
NON_NETWORK = {"optimizer": "optimizer state", "opt": "optimizer state", "scaler": "AMP grad scaler",
               "fp16_scaler": "AMP grad scaler", "epoch": "training progress", "args": "training arguments",
               "arch": "architecture name", "loss": "last loss", "batch_size": "training setting",
               "world_size": "training setting", "lr": "training setting",
               "dino_loss": "DINO loss centre", "predictor": "I-JEPA predictor (training only)"}


def family_formats(family: str) -> list[CheckpointFormat]:
    return [f for f in FORMATS if f.family == family]


def family_keymaps(family: str, model: nn.Module | None = None) -> list[KeyMap]:
    return [f.keymap() for f in family_formats(family)]


def read_container(path: str | os.PathLike) -> tuple[Any, str, Path]:
    """The loaded container (a Hugging Face folder reads as its safetensors dict), a word on
    what it is, and the local path. DINO training checkpoints pickle ``args`` as an
    ``argparse.Namespace``: it alone is allow-listed (weights_only stays on)."""
    s = str(path)
    p = Path(s).expanduser()
    if p.is_dir() or (s.count("/") == 1 and not p.exists()):
        folder = hf.resolve_hf(s)
        cfg = hf.read_hf_config(folder)
        return ({"__hf_config__": cfg, **hf.read_hf_state(folder)}, f"Hugging Face folder "
                f"(model_type {cfg.get('model_type')!r})", folder)
    local = resolve_checkpoint(s)
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = safe_load(local)
    return obj, "file", local


def detect(obj: Any, section_choice: str = "auto") -> tuple[CheckpointFormat, Section]:
    """The first format (and section) that ``obj`` matches; ``section_choice`` picks a named
    section (e.g. ``student``) instead of the first that matches."""
    if isinstance(obj, Mapping) and "__hf_config__" in obj:
        mtype = obj["__hf_config__"].get("model_type")
        state = {k: v for k, v in obj.items() if k != "__hf_config__"}
        for f in FORMATS:
            if mtype in f.hf_model_type:
                return f, f.sections[0]
        raise CheckpointError(f"Hugging Face model_type {mtype!r} is not supported "
                              f"({sorted({t for f in FORMATS for t in f.hf_model_type})}); "
                              f"{len(state)} tensors")
    for f in FORMATS:
        if f.hf_model_type:
            continue
        for sec in f.sections:
            if section_choice not in ("auto", sec.choice):
                continue
            if f.matches(obj, sec):
                return f, sec
    top = list(obj)[:12] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"unrecognised checkpoint layout (top-level keys {top}); known formats: "
                          f"{', '.join(f.name for f in FORMATS)}"
                          + ("" if section_choice == "auto" else f" with section {section_choice!r}"))


def select(obj: Any, fmt: CheckpointFormat, sec: Section) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """The section's tensors (prefix stripped) and a list of what else the container holds."""
    if isinstance(obj, Mapping) and "__hf_config__" in obj:
        return {k: v for k, v in obj.items() if k != "__hf_config__"}, []
    state = fmt.section_state(obj, sec) or {}
    ignored: list[tuple[str, str]] = []
    if isinstance(obj, Mapping) and sec.key is not None:
        for k, v in obj.items():
            if k == sec.key:
                continue
            other = next((s for s in fmt.sections if s.key == k), None)
            if other is not None:
                ignored.append((k, f"{other.label}: not used ({sec.label} is)"))
            else:
                n = len(v) if isinstance(v, Mapping) else None
                ignored.append((k, NON_NETWORK.get(k, "not a network of this model")
                                + (f" ({n} entries)" if n else "")))
        inner = obj[sec.key]
        rest = [k for k in inner if not k.startswith(sec.prefix)]
        if rest:
            groups: dict[str, int] = {}
            for k in rest:
                g = next((s.label for s in fmt.sections if s.key == sec.key and k.startswith(s.prefix)), None)
                g = g or k.split(".")[1 if k.startswith("module.") else 0]
                groups[g] = groups.get(g, 0) + 1
            for g, n in groups.items():
                why = (f"not used ({sec.label} is)" if any(s.label == g for s in fmt.sections)
                       else "head / predictor: not a backbone part")
                ignored.append((f"{sec.key}[{g}: {n} tensors]", why))
    return state, ignored


def load_pretrained(model: nn.Module, checkpoint: str | os.PathLike | Mapping, strict: bool = True,
                    section: str = "auto", expected_family: str | None = None) -> LoadReport:
    """Detect, select, convert and load ``checkpoint`` into ``model`` (a PretrainedViT, or
    anything with ``release`` (its checkpoint family) and the matching parameter names)."""
    family = expected_family or model.release
    if isinstance(checkpoint, Mapping):
        obj, what, source = checkpoint, "in-memory", "<in-memory>"
    else:
        obj, what, local = read_container(checkpoint)
        source = str(local)
    fmt, sec = detect(obj, section)
    if fmt.family != family:
        raise CheckpointError(
            f"checkpoint {source} is a {fmt.name} checkpoint ({fmt.description}), family "
            f"'{fmt.family}', but the model '{getattr(model, 'model_name', family)}' expects family "
            f"'{family}' (formats: {', '.join(f.name for f in family_formats(family))}). "
            f"Pick the matching model=... config.")
    state, ignored = select(obj, fmt, sec)
    notes: list[tuple[str, str]] = []
    if fmt.prepare is not None:
        state = fmt.prepare(state, model, notes)
    report = LoadReport(source=source, layout=fmt.name,
                        container=f"{what}; {fmt.description}; used: {sec.label}"
                        + (f" ({sec.key}[{sec.prefix}*])" if sec.key else ""))
    report.ignored.extend(ignored)
    km = fmt.keymap()
    converted = convert_state_dict(state, km, model, report)
    report.converted.extend(notes)
    errors = report.errors(("",))
    if errors and strict:
        raise CheckpointError(f"checkpoint {source} ({fmt.name}, {sec.label}) does not fit "
                              f"{type(model).__name__} '{getattr(model, 'model_name', '')}':\n  "
                              + "\n  ".join(errors))
    report.warnings += errors
    if not converted:
        raise CheckpointError(f"checkpoint {source}: no tensor matches {type(model).__name__}")
    model.load_state_dict(converted, strict=False)
    log.info("loaded %s checkpoint %s: %s", fmt.name, source, sec.label)
    return report


__all__ = ["FORMATS", "BY_NAME", "CheckpointFormat", "Section", "detect", "family_keymaps",
           "load_pretrained", "read_container", "select"]
