"""Bidirectional key maps written as data.

A rule is a pair of templates ``(theirs, ours)``. A template ending in ``.`` matches a key
prefix (the rest of the key is carried over); any other template matches the whole key.
``{name}`` stands for an integer; ``{name+K}`` / ``{name-K}`` for that integer shifted by K,
which is how a Swin downsample moves from the end of stage S to the start of stage S+1.
The same rule list converts in both directions, so export is the inverse of import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

Rule = tuple[str, str]
_PLACEHOLDER = re.compile(r"\{([a-z_]+)([+-]\d+)?\}")


@dataclass(frozen=True)
class _Template:
    text: str
    regex: re.Pattern[str]
    slots: tuple[tuple[str, int], ...]  # (variable, offset) in order of appearance
    is_prefix: bool

    @classmethod
    def compile(cls, text: str) -> _Template:
        pattern, slots, pos = "", [], 0
        for m in _PLACEHOLDER.finditer(text):
            pattern += re.escape(text[pos : m.start()])
            name, off = m.group(1), int(m.group(2) or 0)
            group = f"{name}__{len(slots)}"
            pattern += f"(?P<{group}>\\d+)"
            slots.append((name, off))
            pos = m.end()
        pattern += re.escape(text[pos:])
        is_prefix = text.endswith(".") or text == ""
        regex = re.compile("^" + pattern + ("" if is_prefix else "$"))
        return cls(text, regex, tuple(slots), is_prefix)

    def match(self, key: str) -> tuple[dict[str, int], str] | None:
        m = self.regex.match(key)
        if m is None:
            return None
        values: dict[str, int] = {}
        for i, (name, off) in enumerate(self.slots):
            values[name] = int(m.group(f"{name}__{i}")) - off
        return values, key[m.end() :]

    def format(self, values: Mapping[str, int], rest: str) -> str:
        out = _PLACEHOLDER.sub(lambda m: str(values[m.group(1)] + int(m.group(2) or 0)), self.text)
        return out + rest


@dataclass
class KeyMap:
    """An ordered list of rules (first match wins) plus per-key tensor transforms.

    ``transforms`` maps a regex on OUR key to ``(to_ours, to_theirs)`` tensor functions.
    ``ignore`` lists THEIR key templates that carry no information for us (e.g. a buffer
    that timm recomputes) together with the reason, reported instead of being "unexpected".
    """

    name: str
    rules: list[Rule]
    transforms: list[tuple[str, Callable[[torch.Tensor], torch.Tensor],
                           Callable[[torch.Tensor], torch.Tensor]]] = field(default_factory=list)
    ignore: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._fwd = [(_Template.compile(a), _Template.compile(b)) for a, b in self.rules]
        self._ign = [(_Template.compile(a), why) for a, why in self.ignore]
        self._tf = [(re.compile(p), f, g) for p, f, g in self.transforms]

    def to_ours(self, key: str) -> str | None:
        for theirs, ours in self._fwd:
            hit = theirs.match(key)
            if hit is not None:
                return ours.format(*hit)
        return None

    def to_theirs(self, key: str) -> str | None:
        for theirs, ours in self._fwd:
            hit = ours.match(key)
            if hit is not None:
                return theirs.format(*hit)
        return None

    def ignored(self, key: str) -> str | None:
        for tpl, why in self._ign:
            if tpl.match(key) is not None:
                return why
        return None

    def transform_to_ours(self, our_key: str, t: torch.Tensor) -> torch.Tensor:
        for rx, f, _ in self._tf:
            if rx.search(our_key):
                return f(t)
        return t

    def transform_to_theirs(self, our_key: str, t: torch.Tensor) -> torch.Tensor:
        for rx, _, g in self._tf:
            if rx.search(our_key):
                return g(t)
        return t


def prefixed(rules: Iterable[Rule], theirs: str, ours: str) -> list[Rule]:
    """Put both sides of inner rules under a prefix, e.g. ``backbone.`` -> ``encoder.``."""
    return [(theirs + a, ours + b) for a, b in rules]
