"""What a released checkpoint format is, as data: where its backbone sits in the container
(sections tried in order: the teacher before the student, the target encoder before the
online one), which keys identify it, its key map onto our models and the tensor surgery a
rename cannot express (split / merge of q, k, v)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from selfsup_vis.checkpoints.keymap import KeyMap, Rule

#: (their key template, why it is not loaded)
Ignore = tuple[str, str]
#: state (section keys stripped) , model, notes -> state; notes collect report lines
Prepare = Callable[[dict[str, torch.Tensor], nn.Module, list[tuple[str, str]]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Section:
    """A tensor dict inside the container: ``key`` of the top-level dict (None: the object
    itself), ``prefix`` kept and stripped (``''``: every key), ``label`` for the report and
    ``choice`` the name a user gives in ``model.checkpoint_key``."""

    key: str | None
    prefix: str
    label: str
    choice: str


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    family: str
    description: str
    sections: tuple[Section, ...]
    required: tuple[str, ...]  # keys (after stripping) that identify the format
    forbidden: tuple[str, ...] = ()  # keys whose presence rules it out
    needs_top: tuple[str, ...] = ()  # top-level container keys it must have
    rules: list[Rule] = field(default_factory=list)
    ignore: list[Ignore] = field(default_factory=list)
    transforms: list = field(default_factory=list)
    prepare: Prepare | None = None
    hf_model_type: tuple[str, ...] = ()  # Hugging Face config.json model_type(s)

    def keymap(self) -> KeyMap:
        return KeyMap(self.name, list(self.rules), transforms=list(self.transforms),
                      ignore=list(self.ignore))

    def section_state(self, obj: Any, section: Section) -> dict[str, torch.Tensor] | None:
        inner = obj if section.key is None else (obj.get(section.key) if isinstance(obj, Mapping) else None)
        if not isinstance(inner, Mapping) or not inner:
            return None
        if not all(isinstance(v, torch.Tensor) for v in inner.values()):
            return None
        out = {k[len(section.prefix):]: v for k, v in inner.items() if k.startswith(section.prefix)}
        return out or None

    def matches(self, obj: Any, section: Section) -> bool:
        if self.needs_top and not (isinstance(obj, Mapping) and all(k in obj for k in self.needs_top)):
            return False
        state = self.section_state(obj, section)
        if state is None:
            return False
        return all(_has(state, k) for k in self.required) and not any(_has(state, k) for k in self.forbidden)


def _has(state: Mapping[str, torch.Tensor], key: str) -> bool:
    if key.endswith("."):
        return any(k.startswith(key) for k in state)
    return key in state


# ------------------------------------------------------------------------- shared surgery
def merge_qkv(their_prefix_tpl: str, q: str, k: str, v: str, out: str) -> Prepare:
    """Concatenate separate q / k / v projections (Hugging Face) into one ``qkv`` (timm):
    for every ``{prefix}{q}.weight`` found, ``{prefix}{out}.weight`` = cat(q, k, v) (same for
    bias; a missing k bias, as in DINOv3, is zeros)."""

    def prepare(state: dict[str, torch.Tensor], model: nn.Module, notes: list[tuple[str, str]]
                ) -> dict[str, torch.Tensor]:
        out_state = dict(state)
        for key in list(state):
            if not key.endswith(f"{q}.weight") or not key.startswith(their_prefix_tpl):
                continue
            base = key[: -len(f"{q}.weight")]
            for kind in ("weight", "bias"):
                parts = [state.get(f"{base}{n}.{kind}") for n in (q, k, v)]
                if all(p is None for p in parts):
                    continue
                ref = next(p for p in parts if p is not None)
                parts = [p if p is not None else torch.zeros_like(ref) for p in parts]
                for n in (q, k, v):
                    out_state.pop(f"{base}{n}.{kind}", None)
                out_state[f"{base}{out}.{kind}"] = torch.cat(parts, 0)
        return out_state

    return prepare
