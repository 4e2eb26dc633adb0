"""Each default once: the typed schema (a dataclass of this package) holds the defaults of the
class its ``_target_`` names, and that class's constructor declares its parameters WITHOUT
defaults. :func:`takes_schema` links the two: the class records its schema (``cls.schema``) and
a call that leaves a parameter out gets the schema's value, so a model or datamodule built in a
test or from an mmpretrain config behaves exactly as one composed from ``conf/``."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf import OmegaConf

T = TypeVar("T", bound=type)


def schema_values(schema: type) -> dict[str, Any]:
    """The schema's defaults as plain values (lists, dicts, enum names), ``_target_`` and other
    underscore keys left out; fields without a default (``???``) are left out too."""
    node = OmegaConf.structured(schema)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        if f.name.startswith("_") or OmegaConf.is_missing(node, f.name):
            continue
        out[f.name] = OmegaConf.to_container(node, resolve=True, enum_to_str=True)[f.name]
    return out


def takes_schema(schema: type) -> Callable[[T], T]:
    """Class decorator: ``cls.schema = schema`` and ``cls(**kw)`` fills every parameter of the
    constructor chain left out of ``kw`` from the schema's defaults (the constructors have none)."""

    def wrap(cls: T) -> T:
        init = cls.__dict__["__init__"]
        params = inspect.signature(init).parameters
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
        defaults = {k: v for k, v in schema_values(schema).items() if open_ended or k in params}

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            given = set(kwargs) | set(list(params)[1 : 1 + len(args)])
            init(self, *args, **{k: v for k, v in defaults.items() if k not in given}, **kwargs)

        cls.__init__ = __init__  # type: ignore[misc]
        cls.schema = schema  # type: ignore[attr-defined]
        return cls

    return wrap


#: packages whose constructors are not ours to change
_FOREIGN = ("builtins", "torch", "pytorch_lightning", "lightning", "typing")


def restated_defaults(cls: type) -> list[str]:
    """``Class.param = value`` for every constructor parameter (along the MRO, our own classes)
    that has a default although ``cls.schema`` has a field of that name: a default written twice."""
    fields = set(schema_values(cls.schema))  # fields with a default (``???`` ones have none)
    found = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.split(".")[0] in _FOREIGN:
            continue
        init = inspect.unwrap(init)
        for name, p in inspect.signature(init).parameters.items():
            if name in fields and p.default is not inspect.Parameter.empty:
                found.append(f"{klass.__qualname__}.{name}={p.default!r}")
    return found
