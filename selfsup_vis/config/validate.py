"""Config errors before any work, in words a user can act on.

- Keys and options: Hydra composes the config (with every config group it searches: the package's,
  ``--config-dir`` and ``hydra.searchpath``) and refuses a key missing from the typed schema or an
  option missing from a group; :func:`config_error_message` turns its exception into a message
  that names the valid keys of that level of the *composed* config and a close match, e.g.
  ``task.n_sampels`` → ``Did you mean task.n_samples?``, or the group's options.
- Values: one validation step (:func:`validate`) whose rules live in the schema fields' metadata.

Torch-free, like the whole config layer: ``--help`` and a misspelt key never load torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any

from hydra.errors import MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException


# ---------------------------------------------------------------------------------------------
# Keys and options: Hydra's composition error, explained from the config it composed
# ---------------------------------------------------------------------------------------------
def unknown_key_message(parent: DictConfig, full_key: str, typed: str | None = None) -> str:
    """``full_key`` is missing from ``parent`` (the composed node one level up): the valid keys
    of that level and a close match. ``typed`` is the override's key as written (it may go
    deeper than the first missing level, e.g. ``task.foo.bar`` when ``task.foo`` is missing)."""
    typed = typed or full_key
    *path, missing = full_key.split(".")
    where = ".".join(path) or "<root>"
    valid = sorted(str(k) for k in parent.keys())
    close = difflib.get_close_matches(missing, valid, n=1)
    hint = f" Did you mean {'.'.join([*path, close[0]])}?" if close else ""
    return (
        f"Unknown config key '{typed}'.{hint}\nValid keys of {where}: {', '.join(valid)}\n"
        f"(use +{typed}=... to add a new key on purpose)"
    )


def composition_message(err: BaseException) -> str:
    """Hydra / OmegaConf's composition error in a few lines: what, key and value."""
    lines = [ln.strip() for ln in str(err).split("Config search path:")[0].splitlines() if ln.strip()]
    cause = err.__cause__
    if cause is not None:
        lines += [ln.strip() for ln in str(cause).splitlines()
                  if ln.strip() and not ln.strip().startswith(("object_type", "reference_type"))]
    return "\n  ".join(dict.fromkeys(lines)) or type(err).__name__


_COULD_NOT_OVERRIDE = re.compile(r"Could not override '(?P<key>[^']+)'")


def config_error_message(err: BaseException) -> str:
    """The message for a config error raised while Hydra composed the config.

    A misspelt key: Hydra's cause (an OmegaConf key error) carries the composed node where the
    key is missing, so the valid keys are those of the config actually composed, whatever
    ``+experiment=``, ``--config-dir`` or ``hydra.searchpath`` put there. An unknown option:
    Hydra's own list of the group's options (from every searched directory) and a close match.
    Anything else: Hydra's lines without the search-path dump."""
    if isinstance(err, ConfigError):
        return str(err)
    cause, typed = err.__cause__, _COULD_NOT_OVERRIDE.match(str(err))
    parent = getattr(cause, "parent_node", None)
    if (typed and isinstance(cause, ConfigAttributeError | ConfigKeyError)
            and isinstance(parent, DictConfig) and getattr(cause, "full_key", None)):
        return unknown_key_message(parent, str(cause.full_key), typed["key"])
    message = composition_message(err)
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        close = difflib.get_close_matches(option, [str(o) for o in err.options], n=1)
        if close and group:
            message += f"\n  Did you mean {group}={close[0]}?"
    return message


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
# A single run: the values are refused before Hydra makes the run directory
# ---------------------------------------------------------------------------------------------
class ConfigRefused(BaseException):
    """A single run's config broke a value rule (``error``). A BaseException because Hydra
    turns an Exception raised in a callback into a warning; ``python -m selfsup_vis`` reports it
    and exits with 2."""

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error


class ValidateOnRunStart(Callback):
    """Hydra callback (``hydra.callbacks.validate``): validates the config Hydra composed for a
    single run before the run directory exists, so a bad value leaves nothing behind. Each job
    of a sweep validates its own values when it starts (``run_task``)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate(config)
        except ConfigError as err:
            raise ConfigRefused(err) from None
