"""Safe checkpoint loading: path/URL resolution with a download cache, weights-only
unpickling, layout detection, key conversion and a load report.

Loading never executes pickled code (``torch.load(weights_only=True)``), memory-maps the file
where it can and hands the converted tensors to ``load_state_dict(assign=True)`` so that a
ViT-B sized checkpoint costs about two copies of the weights at peak, not four.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.utils.download import (
    DownloadError,
    cache_root,
    describe_content,
    download_file,
    read_head,
    show_head,
    structure_problem,
    url_cache_path,
)

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked; the message names the file and keys."""


# ---------------------------------------------------------------------------------------------
# Resolution and download cache
# ---------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where downloaded checkpoints are cached: ``$SELFSUP_VIS_CACHE`` or ~/.cache/selfsup_vis."""
    return cache_root("checkpoints")


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://", "ftp://"))


def resolve_checkpoint(path_or_url: str | os.PathLike, sha256: str | None = None,
                       timeout: float = 30.0) -> Path:
    """Return a local path; URLs are downloaded once into :func:`cache_dir` (atomically)."""
    s = str(path_or_url)
    if not _is_url(s):
        p = Path(s).expanduser()
        if not p.is_file():
            raise CheckpointError(f"checkpoint file not found: {p}")
        return p
    try:
        return download_file(s, url_cache_path(s, cache_dir(), "checkpoint.pth"), sha256, timeout,
                             hint=" (or set $SELFSUP_VIS_CACHE, or pass model.checkpoint=<local path>)",
                             validate=_downloaded_checkpoint_problem)
    except DownloadError as e:
        raise CheckpointError(str(e)) from e


def _checkpoint_content_problem(head: bytes) -> str | None:
    """Why data starting with ``head`` cannot be a checkpoint (PyTorch zip or pickle, or
    safetensors), or None."""
    kind = describe_content(head)
    if kind.startswith(("zip archive", "a pickle", "a safetensors file")):
        return None
    starts = f"; it starts with {show_head(head)}" if head else ""
    return f"it is {kind}, not a PyTorch checkpoint (zip or pickle) or safetensors file{starts}"


def _downloaded_checkpoint_problem(path: Path, head: bytes, content_type: str | None) -> str | None:
    problem = _checkpoint_content_problem(head)
    return problem and f"{problem} (Content-Type {content_type or 'not given'})"


# ---------------------------------------------------------------------------------------------
# Safe load and container unwrapping
# ---------------------------------------------------------------------------------------------
def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (memory-mapped), after its header was checked against
    the file size; every error names the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    problem = structure_problem(path)[1]
    if problem:
        raise CheckpointError(f"cannot load checkpoint {path} ({path.stat().st_size} bytes, "
                              f"safetensors): {problem}. An interrupted download or copy?")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: {e}") from e


def safe_load(path: str | os.PathLike) -> object:
    """Read a checkpoint by its content, whatever its extension: safetensors with
    ``safetensors``, zip/pickle with ``torch.load(weights_only=True)`` (memory-mapped when the
    format allows)."""
    path = Path(path)
    try:
        head = read_head(path)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    problem = _checkpoint_content_problem(head)
    if problem:
        size = path.stat().st_size
        raise CheckpointError(f"cannot load checkpoint {path} ({size} bytes): {problem}. "
                              "An interrupted download or copy, or the wrong file?")
    if describe_content(head).startswith("a safetensors file"):
        return _load_safetensors(path)
    try:
        if path.suffix.lower() == ".safetensors":  # torch.load picks safetensors by the name
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(e).lower() and "zip" not in str(e).lower():
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln
                       or "WeightsUnpickler" in ln), str(e).splitlines()[0] if str(e) else "")
        detail = re.sub(r"\x1b\[[0-9;]*m", "", detail).split(". Please use")[0]
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled Python objects beyond tensors and "
            f"plain containers ({detail}), and selfsup_vis never executes pickled code "
            f"(torch.load weights_only=True). If you trust the file, re-save only its tensors "
            f"elsewhere, e.g. torch.save(torch.load(p, weights_only=False)['state_dict'], out)."
        ) from e
    except (EOFError, RuntimeError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap_state_dict(obj: object, source: str = "<checkpoint>") -> tuple[dict, str]:
    """Find the tensor dict inside the usual containers; return it and the container kind."""
    if _is_tensor_dict(obj):
        return dict(obj), "plain state dict"
    if isinstance(obj, Mapping):
        for key, kind in (("state_dict", "{'state_dict': ...}"), ("model", "{'model': ...}"),
                          ("module", "{'module': ...}"), ("model_state", "{'model_state': ...}")):
            inner = obj.get(key)
            if _is_tensor_dict(inner):
                if "pytorch-lightning_version" in obj:
                    kind = "Lightning checkpoint"
                elif "meta" in obj:
                    kind = "MMSelfSup/mmpretrain {'meta', 'state_dict'}"
                return dict(inner), kind
    raise CheckpointError(
        f"{source}: no state dict found (expected a dict of tensors, or one under 'state_dict', "
        f"'model' or 'module'; top-level keys: {list(obj)[:10] if isinstance(obj, Mapping) else type(obj)})")


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What happened to every tensor of a checkpoint."""

    source: str
    layout: str = ""
    container: str = ""
    converted: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def errors(self, required: Sequence[str]) -> list[str]:
        """Problems that make the model unusable: unexpected or mis-shaped tensors, and
        missing tensors under any of the ``required`` prefixes."""
        out = []
        miss = [k for k in self.missing if any(k.startswith(p) for p in required)]
        if miss:
            out.append(f"missing {len(miss)} required tensor(s): {_short(miss)}")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected key(s) (renamed or from another "
                       f"architecture): {_short(self.unexpected)}")
        if self.mismatched:
            items = [f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
            out.append(f"{len(items)} mis-shaped tensor(s): {_short(items)}")
        return out

    def summary(self) -> str:
        lines = [f"checkpoint {self.source}: layout '{self.layout}' ({self.container}); "
                 f"{len(self.converted)} tensors loaded"]
        if self.resized:
            lines.append("  resized: " + _short([f"{k} {list(a)}->{list(b)}" for k, a, b in self.resized]))
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)}: " + _short([f"{k} ({w})" for k, w in self.ignored]))
        if self.verified:
            lines.append(f"  verified equal to recomputed buffers: {len(self.verified)}")
        for name in ("missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"  {name} {len(keys)}: {_short(keys)}")
        if self.mismatched:
            lines.append("  mis-shaped: " + _short([f"{k} {list(a)} vs {list(b)}" for k, a, b in self.mismatched]))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _short(items: Sequence[str], n: int = 12) -> str:
    s = ", ".join(items[:n])
    return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------
Resizer = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor | None]


def _targets(model: nn.Module) -> tuple[dict[str, torch.Tensor], set[str]]:
    """All of the model's tensors by state-dict name, and which of them are persistent."""
    sd_keys = set(model.state_dict().keys())
    allt: dict[str, torch.Tensor] = dict(model.named_parameters())
    allt.update(dict(model.named_buffers()))
    return allt, sd_keys


def convert_state_dict(state: Mapping[str, torch.Tensor], keymap: KeyMap, model: nn.Module,
                       report: LoadReport, resize: Resizer | None = None) -> dict[str, torch.Tensor]:
    """Rename (and transform) ``state`` into ``model``'s naming; fill ``report``."""
    targets, persistent = _targets(model)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        ours = keymap.to_ours(key)
        if ours is None or ours not in targets:
            why = keymap.ignored(key)
            if why is not None:
                report.ignored.append((key, why))
            else:
                report.unexpected.append(key)
            continue
        tensor = keymap.transform_to_ours(ours, tensor)
        ref = targets[ours]
        if ours not in persistent and tuple(tensor.shape) != tuple(ref.shape):
            report.ignored.append((key, "recomputed by the model for its own window size"))
            continue
        if tuple(tensor.shape) != tuple(ref.shape):
            new = resize(ours, tensor, ref) if resize is not None else None
            if new is None:
                report.mismatched.append((key, tuple(tensor.shape), tuple(ref.shape)))
                continue
            report.resized.append((key, tuple(tensor.shape), tuple(new.shape)))
            report.warnings.append(f"{key} resized {list(tensor.shape)} -> {list(new.shape)} "
                                   f"(image size or window differs from the checkpoint's)")
            tensor = new
        if ours not in persistent:  # recomputed buffer (e.g. Swin relative_position_index)
            if ref.device.type != "meta" and not torch.equal(tensor.to(ref.dtype), ref):
                report.mismatched.append((key, tuple(tensor.shape), tuple(ref.shape)))
                report.warnings.append(f"{key} differs from the value {type(model).__name__} "
                                       f"recomputes; the architecture does not match")
            else:
                report.verified.append(key)
            continue
        if ours in out:
            report.unexpected.append(key)
            report.warnings.append(f"{key} maps onto {ours}, which another key already filled")
            continue
        if tensor.is_floating_point() and ref.is_floating_point() and tensor.dtype != ref.dtype:
            tensor = tensor.to(ref.dtype)
        out[ours] = tensor
        report.converted.append((key, ours))
    report.missing = sorted(k for k in persistent if k not in out)
    return out


def _layout_hits(state: Mapping[str, torch.Tensor], keymaps: Sequence[KeyMap], model: nn.Module) -> int:
    targets, _ = _targets(model)
    return max((sum(1 for k in state if (o := km.to_ours(k)) is not None and o in targets)
                for km in keymaps), default=0)


def strip_wrapper_prefix(state: dict[str, torch.Tensor], keymaps: Sequence[KeyMap],
                         model: nn.Module, source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix DDP / DataParallel put on every key, when every key has it and
    the stripped keys fit the model better (layouts that expect ``module.`` keep it)."""
    prefix = "module."
    if not state or not all(k.startswith(prefix) for k in state):
        return state
    stripped = {k[len(prefix):]: v for k, v in state.items()}
    if _layout_hits(stripped, keymaps, model) <= _layout_hits(state, keymaps, model):
        return state
    log.info("%s: stripped the '%s' prefix of all %d keys (a DDP/DataParallel checkpoint)",
             source, prefix, len(state))
    return stripped


def choose_layout(state: Mapping[str, torch.Tensor], keymaps: Sequence[KeyMap],
                  model: nn.Module) -> KeyMap:
    """The key map under which most checkpoint keys land on model tensors of the right shape."""
    targets, _ = _targets(model)

    def score(i: int) -> tuple[int, int]:
        hits = 0
        for k in state:
            ours = keymaps[i].to_ours(k)
            if ours is not None and ours in targets and (
                    tuple(targets[ours].shape) == tuple(state[k].shape) or "pos_embed" in ours
                    or "relative_position" in ours or "downsample" in ours):
                hits += 1
        return hits, -i  # ties: the earlier (more specific) layout

    return keymaps[max(range(len(keymaps)), key=score)]


def load_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping,
                    keymaps: Sequence[KeyMap], required: Sequence[str] = ("",),
                    strict: bool = True, resize: Resizer | None = None,
                    sha256: str | None = None) -> LoadReport:
    """Load ``checkpoint`` (path, URL or an already loaded object) into ``model``.

    With ``strict`` (default) an unexpected or mis-shaped tensor, or a missing tensor under a
    ``required`` prefix, raises :class:`CheckpointError` naming the keys; otherwise these are
    warnings in the returned report.
    """
    if isinstance(checkpoint, Mapping):
        source, obj = "<in-memory>", checkpoint
    else:
        path = resolve_checkpoint(checkpoint, sha256=sha256)
        source, obj = str(path), safe_load(path)
    state, container = unwrap_state_dict(obj, source)
    state = strip_wrapper_prefix(state, keymaps, model, source)
    km = choose_layout(state, keymaps, model)
    report = LoadReport(source=source, layout=km.name, container=container)
    converted = convert_state_dict(state, km, model, report, resize=resize)
    errors = report.errors(required)
    if errors and strict:
        raise CheckpointError(f"checkpoint {source} does not fit {type(model).__name__} "
                              f"(layout '{km.name}'):\n  " + "\n  ".join(errors))
    report.warnings += errors
    if not converted:
        raise CheckpointError(f"checkpoint {source}: no tensor matches {type(model).__name__}")
    model.load_state_dict(converted, strict=False, assign=True)
    return report


def export_state_dict(model: nn.Module, keymap: KeyMap,
                      include: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Our tensors (incl. recomputed buffers that the other layout stores) in ``keymap``'s
    naming. Keys without a rule are skipped."""
    targets, persistent = _targets(model)
    out: dict[str, torch.Tensor] = {}
    for ours, t in targets.items():
        theirs = keymap.to_theirs(ours)
        if theirs is None or (include is not None and not include(ours)):
            continue
        if ours not in persistent and not theirs.endswith("relative_position_index"):
            continue
        out[theirs] = keymap.transform_to_theirs(ours, t.detach()).contiguous()
    return out
