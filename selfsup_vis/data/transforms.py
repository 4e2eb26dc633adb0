"""Pipelines: PIL image → sample dict, as each algorithm's training (or eval) sees it.

Every step has a name (``RandomResizedCrop``, ``ColorJitter``, ``RandomGrayscale``,
``GaussianBlur``, ``RandomHorizontalFlip``, ``Resize``, ``CenterCrop``, ``Normalize``,
``MaskGenerator``), so ``skip=[...]`` really removes steps — unlike MMSelfSup's
``--skip-type``, which was documented but never implemented. Unknown names are an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2 as T

from selfsup_vis.config.model import IMAGENET_MEAN, IMAGENET_STD
from selfsup_vis.config.schemas import Pipeline as PipelineName

PIPELINES = tuple(p.value for p in PipelineName)
SKIPPABLE = (
    "RandomResizedCrop", "ColorJitter", "RandomGrayscale", "GaussianBlur",
    "RandomHorizontalFlip", "Resize", "CenterCrop", "Normalize", "MaskGenerator",
)  # fmt: skip
# MMSelfSup / mmpretrain transform names accepted as aliases in ``skip``.
ALIASES = {"RandomFlip": "RandomHorizontalFlip", "RandomGaussianBlur": "GaussianBlur",
           "ColorJitterRandomApply": "ColorJitter", "SimMIMMaskGenerator": "MaskGenerator",
           "BEiTMaskGenerator": "MaskGenerator", "PackInputs": None, "PackSelfSupInputs": None,
           "LoadImageFromFile": None}  # fmt: skip
_BICUBIC = T.InterpolationMode.BICUBIC


@dataclass
class View:
    """One view: named steps applied in order (PIL in, tensor out)."""

    name: str
    steps: list[tuple[str, Callable[[Any], Any]]]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        x: Any = image
        for _, step in self.steps:
            x = step(x)
        return x

    @property
    def step_names(self) -> list[str]:
        return [n for n, _ in self.steps]


@dataclass
class Pipeline:
    """PIL image → ``{"image"}`` (one view) or ``{"views"}`` (several), plus ``"mask"``."""

    name: str
    views: list[View]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalized: bool = True
    mask_generator: Callable[[], torch.Tensor] | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def multi_view(self) -> bool:
        return len(self.views) > 1

    def __call__(self, image: Image.Image) -> dict[str, Any]:
        tensors = [v(image) for v in self.views]
        out: dict[str, Any] = {"views": tensors} if self.multi_view else {"image": tensors[0]}
        if self.mask_generator is not None:
            out["mask"] = self.mask_generator()
        return out

    def describe(self) -> str:
        lines = [f"pipeline {self.name!r}" + (f" (skipped: {', '.join(self.skipped)})" if self.skipped else "")]
        for v in self.views:
            lines.append(f"  {v.name}: " + " → ".join(v.step_names))
        if self.mask_generator is not None:
            lines.append(f"  mask: {self.mask_generator!r}")
        return "\n".join(lines)


def _blur_kernel(size: int) -> int:
    k = max(3, int(0.1 * size))
    return k if k % 2 else k + 1


def _to_tensor() -> Callable[[Any], torch.Tensor]:
    return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])


def _moco_steps(size: int, scale: tuple[float, float]) -> list[tuple[str, Callable]]:
    return [
        ("RandomResizedCrop", T.RandomResizedCrop(size, scale=scale, interpolation=_BICUBIC, antialias=True)),
        ("ColorJitter", T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)),
        ("RandomGrayscale", T.RandomGrayscale(p=0.2)),
        ("GaussianBlur", T.RandomApply([T.GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0))], p=0.5)),
        ("RandomHorizontalFlip", T.RandomHorizontalFlip()),
    ]


def normalize_skip(skip: Sequence[str]) -> list[str]:
    """Map aliases to our step names; unknown names raise, listing the valid ones."""
    out = []
    for name in skip:
        if name in ALIASES:
            if ALIASES[name] is not None:
                out.append(ALIASES[name])
            continue
        if name not in SKIPPABLE:
            raise ValueError(f"skip_type: unknown transform {name!r}; valid: {', '.join(SKIPPABLE)}")
        out.append(name)
    return out


def build_pipeline(
    name: str,
    img_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    skip: Sequence[str] = (),
    *,
    crop_pct: float | None = 0.875,
    num_local_views: int = 6,
    local_size: int | None = None,
    mask_generator: Callable[..., torch.Tensor] | None = None,
) -> Pipeline:
    """Build a named pipeline (see ``PIPELINES``) for images of ``img_size`` pixels.

    ``eval``: resize (shorter side to ``img_size / crop_pct``) + center-crop, or a plain
    resize to ``img_size`` when ``crop_pct`` is None. ``mocov2``: two views
    (RandomResizedCrop 0.2–1, ColorJitter 0.4/0.4/0.4/0.1 p0.8, Grayscale p0.2, GaussianBlur
    σ 0.1–2 p0.5, flip). ``multicrop``: 2 global + N local views. ``mae``: RandomResizedCrop
    0.2–1 + flip. ``simmim``: RandomResizedCrop 0.67–1 + flip + SimMIM mask. ``maskfeat``:
    RandomResizedCrop 0.5–1 + flip (+ blockwise mask). Every sample gets a ``"mask"`` from
    ``mask_generator`` when one is given: the caller's (the model family owns its mask rule,
    see ``model_pipeline`` of the models package); this package never builds a model's masks.
    """
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; valid: {', '.join(PIPELINES)}")
    skip_set = set(normalize_skip(skip))
    mean_t, std_t = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    flip = ("RandomHorizontalFlip", T.RandomHorizontalFlip())
    if name == "eval":
        if crop_pct is None:
            steps = [("Resize", T.Resize((img_size, img_size), interpolation=_BICUBIC, antialias=True))]
        else:
            steps = [
                ("Resize", T.Resize(int(round(img_size / crop_pct)), interpolation=_BICUBIC, antialias=True)),
                ("CenterCrop", T.CenterCrop(img_size)),
            ]
        views = [("view", steps)]
    elif name == "mocov2":
        views = [(f"view{i}", _moco_steps(img_size, (0.2, 1.0))) for i in (1, 2)]
    elif name == "multicrop":
        local = local_size or max(16, int(round(img_size * 96 / 224)))
        views = [(f"global{i}", _moco_steps(img_size, (0.14, 1.0))) for i in (1, 2)]
        views += [(f"local{i}", _moco_steps(local, (0.05, 0.14))) for i in range(1, num_local_views + 1)]
    elif name == "mae":
        rrc = T.RandomResizedCrop(img_size, scale=(0.2, 1.0), interpolation=_BICUBIC, antialias=True)
        views = [("view", [("RandomResizedCrop", rrc), flip])]
    elif name == "simmim":
        rrc = T.RandomResizedCrop(
            img_size, scale=(0.67, 1.0), ratio=(3 / 4, 4 / 3), interpolation=_BICUBIC, antialias=True
        )
        views = [("view", [("RandomResizedCrop", rrc), flip])]
    else:  # maskfeat
        rrc = T.RandomResizedCrop(
            img_size, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), interpolation=_BICUBIC, antialias=True
        )
        views = [("view", [("RandomResizedCrop", rrc), flip])]
    has_mask = mask_generator is not None
    if "MaskGenerator" in skip_set:
        mask_generator = None
    built = []
    for view_name, steps in views:
        kept = [(n, t) for n, t in steps if n not in skip_set]
        kept.append(("ToTensor", _to_tensor()))
        if "Normalize" not in skip_set:
            kept.append(("Normalize", T.Normalize(mean_t, std_t)))
        built.append(View(view_name, kept))
    present = {n for v in views for n, _ in v[1]} | {"Normalize"} | ({"MaskGenerator"} if has_mask else set())
    not_in = sorted(skip_set - present)
    if not_in:
        raise ValueError(
            f"skip_type: pipeline {name!r} has no step {', '.join(not_in)}; its steps: {', '.join(sorted(present))}"
        )
    return Pipeline(name, built, mean_t, std_t, "Normalize" not in skip_set, mask_generator, sorted(skip_set))


def pipeline_for_model(
    model_cfg: Any,
    name: str | None = None,
    skip: Sequence[str] = (),
    crop_pct: float | None = 0.875,
    mask_generator: Callable[..., torch.Tensor] | None = None,
) -> Pipeline:
    """The pipeline named by ``name`` (default: the model's training pipeline), sized and
    normalised from the model config (``img_size``, ``mean``, ``std``), drawing masks with
    ``mask_generator`` when given. A masked-image model's training pipeline needs its
    generator: build that one with ``model_pipeline(model_cfg)`` of the models package."""
    name = str(name or model_cfg.get("pipeline", "eval"))
    return build_pipeline(
        name,
        int(model_cfg["img_size"]),
        model_cfg.get("mean", IMAGENET_MEAN),
        model_cfg.get("std", IMAGENET_STD),
        skip,
        crop_pct=crop_pct,
        mask_generator=mask_generator,
    )


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(…, 3, H, W) normalised tensor → [0, 1] RGB for display."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * s + m).clamp(0, 1)
