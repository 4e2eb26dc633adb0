"""Config errors before any work: a misspelt key names the valid keys (and a close match),
and bad values are refused by one validation step (``validate``) whose rules live in the
schema fields' metadata.

Hydra already refuses a key missing from the typed schema; ``check_overrides`` runs first and
says which keys *are* valid, e.g. ``task.n_sampels`` → ``did you mean task.n_samples?``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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


# ---------------------------------------------------------------------------------------------
# Values: one validation step, rules kept next to the schema fields (``field(metadata=...)``)
# ---------------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """A config value that cannot work, found before any work starts (exit code 2)."""


#: rule names read from a schema field's metadata
#:   min / max: value >= / <= bound; gt / lt: value > / < bound (each element of a list);
#:   divides: the value must divide the sibling field named (e.g. patch_size divides img_size)
RULES = ("min", "max", "gt", "lt", "divides")


def _fmt(v: Any) -> str:
    return str(v.value) if hasattr(v, "value") else repr(v) if isinstance(v, str) else str(v)


def _value_errors(key: str, value: Any, meta: Mapping[str, Any]) -> list[str]:
    values = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
    errs = []
    for i, v in enumerate(values):
        if v is None or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        k = key if len(values) == 1 and not isinstance(value, ListConfig | list | tuple) else f"{key}[{i}]"
        if "min" in meta and v < meta["min"]:
            errs.append(f"{k}={_fmt(v)}: must be >= {meta['min']}")
        if "max" in meta and v > meta["max"]:
            errs.append(f"{k}={_fmt(v)}: must be <= {meta['max']}")
        if "gt" in meta and not v > meta["gt"]:
            errs.append(f"{k}={_fmt(v)}: must be > {meta['gt']}")
        if "lt" in meta and not v < meta["lt"]:
            errs.append(f"{k}={_fmt(v)}: must be < {meta['lt']}")
    return errs


def schema_errors(node: DictConfig, prefix: str) -> list[str]:
    """Every rule of ``node``'s typed schema (and its nested typed nodes) that a value breaks."""
    typ = OmegaConf.get_type(node)
    if not (isinstance(typ, type) and dataclasses.is_dataclass(typ)):
        return []
    errs: list[str] = []
    for f in dataclasses.fields(typ):
        if f.name not in node or OmegaConf.is_missing(node, f.name):
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        child = node._get_node(f.name)
        if isinstance(child, DictConfig):
            errs += schema_errors(child, key)
            continue
        meta = f.metadata
        if not any(r in meta for r in RULES):
            continue  # values without rules are never resolved here (${hydra:...} before Hydra runs)
        try:
            value = node[f.name]
        except OmegaConfBaseException:
            continue  # an interpolation only the running job can resolve
        errs += _value_errors(key, value, meta)
        other = meta.get("divides")
        if other and isinstance(value, int) and value > 0 and other in node:
            try:
                total = node[other]
            except OmegaConfBaseException:
                continue
            if isinstance(total, int) and total % value:
                okey = f"{prefix}.{other}" if prefix else other
                errs.append(f"{okey}={total}: not divisible by {key}={value} "
                            f"(use a multiple of {value}, e.g. {max(value, total // value * value)})")
    return errs


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def _get(node: DictConfig, key: str) -> Any:
    """``node[key]``, or None when absent or only resolvable by the running job."""
    try:
        return node[key] if key in node else None
    except OmegaConfBaseException:
        return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def task_value_errors(cfg: DictConfig) -> list[str]:
    """Values of ``task`` whose meaning depends on their kind or on other keys (the schema's
    ``Any`` fields and cross-key rules), refused before any data or model is touched."""
    task = cfg.get("task") if isinstance(cfg, DictConfig) else None
    if not isinstance(task, DictConfig):
        return []
    errs: list[str] = []
    device = _get(task, "device")
    if device is not None and not _DEVICE.match(str(device)):
        errs.append(f"task.device={device!r}: unknown device; use auto, cpu, cuda, cuda:<index> or mps")
    if "pca_dims" in task:
        pca = _get(task, "pca_dims")
        if not (pca is None or pca == "auto" or (_is_int(pca) and pca >= 0)):
            errs.append(f"task.pca_dims={pca!r}: must be an integer >= 1 (the PCA dimensions), "
                        f"0 or null (no PCA) or 'auto'")
    target = _get(task, "target_category")
    if target is not None and (_is_int(target) or str(target).lstrip("-").isdigit()):
        k = int(target)
        model = cfg.get("model")
        n_out = _get(model, "num_classes") if isinstance(model, DictConfig) else None
        if k < 0:
            errs.append(f"task.target_category={k}: a class index must be >= 0")
        elif _is_int(n_out) and n_out > 0 and k >= n_out:
            errs.append(f"task.target_category={k}: out of range, model.num_classes={n_out} "
                        f"(valid indices 0..{n_out - 1})")
    features = _get(task, "features")
    if features:
        export = [str(getattr(e, "value", e)) for e in (_get(task, "export") or [])]
        if export:
            errs.append(f"task.export={export}: needs the images (thumbnails), which task.features="
                        f"{features} does not have; drop task.export or extract from a dataset instead")
    if _get(task, "classes") is not None and not _get(task, "labels"):
        errs.append("task.classes is set but task.labels is not: class names need the labels "
                    "they name (task.labels=<.npy or .csv>)")
    panel = _get(task, "panel_layer")
    if panel is not None:
        default = [str(x) for x in (_get(task, "layers") or [])]
        entries = [e for e in (_get(task, "models") or []) if isinstance(e, DictConfig)]
        per_model = [[str(x) for x in (_get(e, "layers") or [])] or default for e in entries] or [default]
        if all(per_model) and not any(str(panel) in layers for layers in per_model):
            errs.append(f"task.panel_layer={panel!r}: not among the compared layers "
                        f"{sorted({x for layers in per_model for x in layers})}")
    return errs


def validate(cfg: DictConfig) -> None:
    """Refuse bad values of the composed config at start, naming each key and value.

    OmegaConf checks types on merge but never runs ``__post_init__``; the value rules live in
    each schema field's metadata (``field(default=8, metadata={"min": 1})``) and are read here."""
    errs: list[str] = []
    for group in ("task", "model", "dataset", "trainer"):
        node = cfg.get(group) if isinstance(cfg, DictConfig) else None
        if isinstance(node, DictConfig):
            errs += schema_errors(node, group)
    root = {k: cfg[k] for k in ("seed",) if k in cfg}
    for k, v in root.items():
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            errs.append(f"{k}={v}: must be >= 0")
    errs += task_value_errors(cfg)
    if errs:
        more = "".join(f"\n  also: {e}" for e in errs[1:])
        raise ConfigError(f"{errs[0]}{more}")


# ---------------------------------------------------------------------------------------------
# Before Hydra starts a single run: compose + validate, so that config errors exit with 2
# ---------------------------------------------------------------------------------------------
_FLAGS_WITH_VALUE = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir",
                     "--info", "-i", "--cfg", "-c", "--package", "-p", "--experimental-rerun"}


def job_overrides(args: list[str]) -> list[str]:
    """The job's ``key=value`` overrides among command-line ``args`` (no flags, no hydra.*)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            if "=" not in a:  # the flag's value (--info's is optional)
                continue
        if a in _FLAGS_WITH_VALUE:
            skip = True
            continue
        if a.startswith("-") or a.lstrip("+~").startswith("hydra"):
            continue
        out.append(a)
    return out


def composition_message(err: BaseException) -> str:
    """Hydra / OmegaConf's composition error in a few lines: what, key and value."""
    lines = [ln.strip() for ln in str(err).split("Config search path:")[0].splitlines() if ln.strip()]
    cause = err.__cause__
    if cause is not None:
        lines += [ln.strip() for ln in str(cause).splitlines()
                  if ln.strip() and not ln.strip().startswith(("object_type", "reference_type"))]
    return "\n  ".join(dict.fromkeys(lines)) or type(err).__name__


def preflight(conf_dir: str, config_name: str, args: list[str]) -> str | None:
    """A message for a config error in ``args`` (unknown key, bad value, failed composition),
    or None. Sweeps (``-m``) are checked key by key only: each job validates its own values."""
    overrides = job_overrides(args)
    message = check_overrides(conf_dir, config_name, overrides)
    if message or any(a in ("-m", "--multirun") for a in args):
        return message
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
        validate(cfg)
    except ConfigError as err:
        return str(err)
    except Exception as err:
        if type(err).__module__.startswith(("hydra", "omegaconf")):
            return composition_message(err)
        return None  # anything else: let the run report it
    finally:
        GlobalHydra.instance().clear()
    return None
