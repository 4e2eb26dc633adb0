"""Friendlier compose-time errors: a misspelt key names the valid keys (and a close match).

Hydra already refuses a key missing from the typed schema; this check runs first and says
which keys *are* valid, e.g. ``task.n_sampels`` → ``did you mean task.n_samples?``.
"""

from __future__ import annotations

import difflib
import re

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

_KEY_OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][\w-]*(?:\.[\w-]+)+)=")
_GROUP_CHOICE = re.compile(r"^(?P<group>[A-Za-z_][\w/-]*)=(?P<value>[^,\[\]{}]*)$")


def unknown_key_message(cfg: DictConfig, key: str) -> str | None:
    """None if ``key`` exists in ``cfg``; else a message listing the valid keys at that level."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return None  # below a leaf or a list: leave it to Hydra
        if part not in node.keys():  # ("in" is False for a ??? value)
            parent = ".".join(parts[:i]) or "<root>"
            valid = sorted(str(k) for k in node.keys())
            close = difflib.get_close_matches(part, valid, n=1)
            hint = f" Did you mean {'.'.join(parts[:i] + close)}?" if close else ""
            return (
                f"Unknown config key '{key}'.{hint}\nValid keys of {parent}: {', '.join(valid)}\n"
                f"(use +{key}=... to add a new key on purpose)"
            )
        node = node._get_node(part) if OmegaConf.is_config(node) else None
        if OmegaConf.is_config(node) is False:
            return None
    return None


def check_overrides(conf_dir: str, config_name: str, overrides: list[str]) -> str | None:
    """Compose with the group choices among ``overrides`` and check every ``a.b=v`` key."""
    keys = [m["key"] for o in overrides if (m := _KEY_OVERRIDE.match(o)) and not o.startswith("hydra.")]
    if not keys:
        return None
    choices = [
        o
        for o in overrides
        if (_GROUP_CHOICE.match(o) and "." not in o.split("=", 1)[0]) or o.startswith("hydra.searchpath=")
    ]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = compose(config_name, overrides=choices)
    except Exception:
        return None  # Hydra will report the composition problem itself
    finally:
        GlobalHydra.instance().clear()
    for key in keys:
        message = unknown_key_message(cfg, key)
        if message:
            return message
    return None
