"""The model families, derived from their declarations: every schema of the ``schema/model``
config group (config/model.py, plus any imported user schema) names its class by ``_target_``;
the class (``@takes_schema``) points back at the schema and declares the rest (mask generator,
mmpretrain types, masked-image contract). Nothing else lists the families.

Also the training pipeline of a model config: the data pipeline named by ``pipeline`` with the
mask generator of the family that owns it (the data package never imports a model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class

from selfsup_vis.config.model import ModelConfig, model_schemas
from selfsup_vis.data.transforms import Pipeline, pipeline_for_model
from selfsup_vis.models.base import SSLModule
from selfsup_vis.models.masked import MaskedImageModule, MaskGenerator


@dataclass(frozen=True)
class Family:
    """One model family: its name in ``schema/model``, its schema and its class."""

    name: str
    schema: type[ModelConfig]
    cls: type[SSLModule]

    @property
    def pipeline(self) -> str:
        """The training pipeline its schema declares (``pipeline``'s default)."""
        return str(self.schema().pipeline.value)

    @property
    def reconstructs(self) -> bool:
        """Masked-image family: task=reconstruct and the ReconstructionDump callback apply."""
        return issubclass(self.cls, MaskedImageModule)

    @property
    def data_masks(self) -> bool:
        """Its training batches carry masks drawn by the data pipeline."""
        return self.reconstructs and self.cls.data_masks  # type: ignore[attr-defined]


def families() -> dict[str, Family]:
    """Every family by name; a schema whose class does not point back at it is an error."""
    out = {}
    for name, schema in model_schemas().items():
        cls = get_class(schema._target_)
        if not (isinstance(cls, type) and issubclass(cls, SSLModule)) or getattr(cls, "schema", None) is not schema:
            raise TypeError(f"model family {name!r}: {schema.__qualname__}._target_ = {schema._target_} "
                            f"must be an SSLModule decorated with @takes_schema({schema.__qualname__})")
        out[name] = Family(name, schema, cls)
    return out


def model_class(model_cfg: Mapping[str, Any]) -> type[SSLModule]:
    """The class a model config builds (its ``_target_``), without building it."""
    target = str(model_cfg.get("_target_") or "")
    cls = get_class(target) if target else None
    if not (isinstance(cls, type) and issubclass(cls, SSLModule)):
        raise ValueError(f"model={model_cfg.get('name')!r}: _target_ {target or '(none)'} is not a "
                         f"selfsup_vis model (an SSLModule)")
    return cls


def pipeline_mask_generator(model_cfg: Mapping[str, Any], name: str) -> MaskGenerator | None:
    """The masks a data pipeline ``name`` draws for ``model_cfg``: the model's own generator when
    ``name`` is its family's training pipeline and the family trains on data-drawn masks; for a
    pipeline named after another family that does (browsing ``pipeline=simmim`` with an MAE),
    that family's rule at the model's size; otherwise none."""
    cls = model_class(model_cfg)
    own = getattr(cls, "schema", None)
    if issubclass(cls, MaskedImageModule) and cls.data_masks and own is not None \
            and str(own().pipeline.value) == name:
        return cls.mask_generator_from_config(model_cfg)
    fam = families().get(name)
    if fam is not None and fam.data_masks and fam.pipeline == name:
        return fam.cls.mask_generator_from_config({"img_size": int(model_cfg["img_size"])})  # type: ignore[attr-defined]
    return None


def model_pipeline(model_cfg: Any, name: str | None = None, skip: Sequence[str] = (),
                   crop_pct: float | None = 0.875) -> Pipeline:
    """The data pipeline ``name`` (default: the model's training pipeline) for ``model_cfg``,
    drawing the masks :func:`pipeline_mask_generator` gives (none for ``eval``)."""
    name = str(name or model_cfg.get("pipeline", "eval"))
    return pipeline_for_model(model_cfg, name, skip, crop_pct=crop_pct,
                              mask_generator=pipeline_mask_generator(model_cfg, name))
