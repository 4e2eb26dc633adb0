"""JPEG decoding, resize, centre crop and normalisation on the GPU for feature extraction.

Why: with PIL in DataLoader workers a GPU server extracts ~500 img/s while the model forwards
10,000+ (issue 23, measured on an H200). Here the workers only read file bytes; the main process
decodes a whole batch with ``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG) and applies the
eval pipeline's resize / crop / normalisation on the device.

Same semantics as the CPU eval pipeline (``data.transforms.build_pipeline("eval")``): the shorter
side resized to ``round(img_size / crop_pct)`` (or the image stretched to img_size² when
crop_pct is None), bicubic with antialiasing, on 8-bit RGB (rounded back to uint8 as PIL does),
centre crop, /255, normalise. Differences, all below a grey level: PIL's bicubic is fixed-point
and torchvision's tensor bicubic is float (±1 level on some pixels), and nvJPEG / libjpeg-turbo
upsample chroma slightly differently from PIL's libjpeg build. tests/test_gpu_decode.py bounds the
effect: per-image feature cosine ≥ 0.999 against the CPU pipeline.

Per file, the CPU path (``open_rgb`` + the pipeline, in the worker) is used instead for anything
the GPU decoder would get wrong or cannot read: not a JPEG, CMYK/YCCK, progressive or arithmetic
coded, 12-bit, an EXIF orientation other than upright, and headers PIL cannot parse (corrupt
files then keep today's behaviour: ``CorruptImageError`` naming the file, or skipped with
``dataset.skip_corrupt``). A file whose header looks fine but which nvJPEG fails on is decoded
again on the CPU from its path, with the same error handling.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from selfsup_vis.data.base import CorruptImageError, ImageDataset

log = logging.getLogger(__name__)

DECODE_MODES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class EvalSpec:
    """What the eval pipeline does after decoding: resize (an int = shorter side, a pair =
    stretch), optional centre crop, normalisation."""

    resize: int | tuple[int, int]
    crop: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalize: bool = True
    interpolation: InterpolationMode = InterpolationMode.BICUBIC
    antialias: bool = True


def eval_spec(pipeline: Any) -> EvalSpec:
    """The ``EvalSpec`` of a single-view eval ``Pipeline``; ValueError when it has any other
    step (the GPU path reproduces exactly Resize [+ CenterCrop] + ToTensor [+ Normalize])."""
    if getattr(pipeline, "multi_view", False) or len(pipeline.views) != 1:
        raise ValueError("GPU decode: only single-view eval pipelines are supported")
    if getattr(pipeline, "mask_generator", None) is not None:
        raise ValueError("GPU decode: pipelines that draw masks are not supported")
    resize = crop = None
    interp, antialias = InterpolationMode.BICUBIC, True
    for name, step in pipeline.views[0].steps:
        if name == "Resize":
            size = step.size
            resize = int(size) if isinstance(size, int) else (
                int(size[0]) if len(size) == 1 else (int(size[0]), int(size[1])))
            interp, antialias = step.interpolation, bool(step.antialias)
        elif name == "CenterCrop":
            crop = int(step.size[0])
        elif name not in ("ToTensor", "Normalize"):
            raise ValueError(f"GPU decode: pipeline step {name!r} has no GPU equivalent")
    if resize is None:
        raise ValueError("GPU decode: the eval pipeline has no Resize step")
    return EvalSpec(resize, crop, tuple(pipeline.mean), tuple(pipeline.std), bool(pipeline.normalized),
                    interp, antialias)


def _sof_marker(data: bytes) -> int | None:
    """The frame (SOF) marker of a JPEG: 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...;
    None when the header ends before one (a truncated or corrupt file)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def gpu_unsupported_reason(data: bytes) -> str | None:
    """Why ``data`` must be decoded on the CPU, or None when nvJPEG decodes it as PIL does
    (8-bit baseline/extended sequential RGB or grayscale, upright). Reads the header only."""
    if data[:3] != b"\xff\xd8\xff":
        return "not a JPEG"
    sof = _sof_marker(data)
    if sof is None:
        return "no JPEG frame header"
    if sof not in (0xC0, 0xC1):
        return "progressive JPEG" if sof in (0xC2, 0xC6, 0xCA) else f"JPEG frame type 0x{sof:02X}"
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header only
            if im.mode not in ("RGB", "L"):
                return f"{im.mode} JPEG"
            if im.getexif().get(0x0112, 1) != 1:
                return "EXIF orientation"
    except Exception as err:  # noqa: BLE001 - any header error: the CPU path names the file
        return f"unreadable header ({type(err).__name__})"
    return None


class EncodedImageDataset(Dataset):
    """Wraps a file dataset (``paths``; its transform is the CPU eval pipeline): a sample is the
    file's bytes (``jpeg``, uint8) when the GPU can decode it, else the CPU-decoded ``image``
    (``jpeg`` empty); plus ``label``, ``index``, ``name``, ``on_gpu``."""

    def __init__(self, base: ImageDataset) -> None:
        if not hasattr(base, "paths"):
            raise ValueError(f"GPU decode needs a dataset of image files, got {type(base).__name__}")
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        path = Path(self.base.paths[index])
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        if data and gpu_unsupported_reason(data) is None:
            return {"jpeg": torch.frombuffer(bytearray(data), dtype=torch.uint8), "on_gpu": True,
                    "label": self.base.labels[index], "index": index, "name": self.base.names[index]}
        sample = self.base[index]  # the CPU path: raises or skips corrupt files as today
        if sample is None:
            return None
        sample["jpeg"] = torch.zeros(0, dtype=torch.uint8)
        sample["on_gpu"] = False
        return sample


def collate_encoded(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Batch of ``EncodedImageDataset`` samples: ``jpeg`` stays a list (lengths differ),
    CPU-decoded images are stacked in ``cpu_image`` (in order of the ``on_gpu == False`` rows)."""
    kept = [b for b in batch if b is not None]
    if len(kept) < len(batch):
        log.warning("skipped %d corrupt image(s) in a batch", len(batch) - len(kept))
    out: dict[str, Any] = {"jpeg": [b["jpeg"] for b in kept]}
    cpu = [b["image"] for b in kept if not b["on_gpu"]]
    out["cpu_image"] = torch.stack(cpu) if cpu else None
    rest = [{k: v for k, v in b.items() if k not in ("jpeg", "image")} for b in kept]
    out.update(default_collate(rest) if rest else {"index": torch.zeros(0, dtype=torch.long),
                                                   "label": torch.zeros(0, dtype=torch.long)})
    return out


def transform_decoded(img: torch.Tensor, spec: EvalSpec) -> torch.Tensor:
    """uint8 (3, H, W) on any device -> normalised float (3, S, S), as the CPU eval pipeline."""
    size = [spec.resize] if isinstance(spec.resize, int) else list(spec.resize)
    out = F.resize(img, size, interpolation=spec.interpolation, antialias=spec.antialias)
    if spec.crop is not None:
        out = F.center_crop(out, [spec.crop, spec.crop])
    out = out.float() / 255.0
    if spec.normalize:
        out = F.normalize(out, list(spec.mean), list(spec.std))
    return out


def decode_batch(batch: dict[str, Any], spec: EvalSpec, device: str | torch.device,
                 fallback: ImageDataset | None = None) -> torch.Tensor:
    """The batch's images (B, 3, S, S) on ``device``: nvJPEG (or libjpeg-turbo on the CPU) for the
    ``on_gpu`` rows in one batched call, CPU-decoded rows copied in. A file the batched call fails
    on is retried alone, then decoded from its path by ``fallback`` (the CPU pipeline)."""
    dev = torch.device(device)
    on_gpu = batch["on_gpu"].tolist()
    datas = [d for d, g in zip(batch["jpeg"], on_gpu, strict=True) if g]
    decoded: list[torch.Tensor | None]
    try:
        decoded = list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=dev)) if datas else []
    except RuntimeError:
        decoded = []
        for d in datas:
            try:
                decoded.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=dev))
            except RuntimeError:
                decoded.append(None)
    cpu_iter = iter(batch["cpu_image"]) if batch["cpu_image"] is not None else iter(())
    gpu_iter = iter(decoded)
    images = []
    for row, g in enumerate(on_gpu):
        if not g:
            images.append(next(cpu_iter).to(dev, non_blocking=True))
            continue
        img = next(gpu_iter)
        if img is None:
            index = int(batch["index"][row])
            if fallback is None:
                raise CorruptImageError(f"cannot decode image {batch['name'][row]} on {dev}")
            log.warning("%s: GPU decode failed; decoding on the CPU", batch["name"][row])
            sample = fallback[index]
            if sample is None:  # skip_corrupt: the CPU path dropped it
                raise CorruptImageError(f"cannot read image {batch['name'][row]}")
            images.append(sample["image"].to(dev))
            continue
        images.append(transform_decoded(img, spec))
    return torch.stack(images) if images else torch.zeros(0, 3, 1, 1, device=dev)


def resolve_decode(mode: str, *, on_cuda: bool, pipeline: Any, dataset: Any) -> tuple[str, str]:
    """``dataset.decode`` -> ("gpu" | "cpu", why). ``auto``: GPU when the trainer is on CUDA, the
    dataset is image files and the pipeline is a plain eval pipeline; ``gpu`` refuses (with the
    reason) when one of those does not hold; ``cpu``: always the PIL path."""
    if mode not in DECODE_MODES:
        raise ValueError(f"dataset.decode must be one of {DECODE_MODES}, got {mode!r}")
    if mode == "cpu":
        return "cpu", "dataset.decode=cpu"
    problems = []
    if not on_cuda:
        problems.append("the trainer is not on CUDA")
    if not hasattr(dataset, "paths"):
        problems.append(f"{type(dataset).__name__} is not a dataset of image files")
    try:
        eval_spec(pipeline)
    except (ValueError, AttributeError) as err:
        problems.append(str(err))
    if problems:
        if mode == "gpu":
            raise ValueError("dataset.decode=gpu: " + "; ".join(problems))
        return "cpu", "auto: " + "; ".join(problems)
    return "gpu", f"{mode}: nvJPEG batch decode + resize/crop/normalise on the GPU"


class GpuDecodeHook:
    """The DataModule's side of ``dataset.decode``: ``prepare`` decides per predict loader (and
    swaps in the byte-reading dataset and its collate), ``__call__`` (from the DataModule's
    ``on_before_batch_transfer``) decodes a batch on the trainer's device. Under DDP every rank
    decodes its own shard on its own device. ``used`` is what summary.json reports."""

    def __init__(self, mode: str = "auto") -> None:
        if mode not in DECODE_MODES:
            raise ValueError(f"dataset.decode must be one of {DECODE_MODES}, got {mode!r}")
        self.mode = mode
        self.used: dict[str, str] | None = None
        self._active: tuple[EvalSpec, Any, torch.device] | None = None

    def prepare(self, dataset: Any, pipeline: Any, trainer: Any) -> tuple[Any, Any]:
        device = getattr(getattr(trainer, "strategy", None), "root_device", torch.device("cpu"))
        mode, why = resolve_decode(self.mode, on_cuda=device.type == "cuda", pipeline=pipeline,
                                   dataset=dataset)
        self.used = {"mode": mode, "why": why}
        if mode == "cpu":
            self._active = None
            return dataset, None
        log.info("dataset.decode: %s", why)
        self._active = (eval_spec(pipeline), dataset, device)
        return EncodedImageDataset(dataset), collate_encoded

    def __call__(self, batch: Any) -> Any:
        if self._active is None or not isinstance(batch, dict) or "jpeg" not in batch:
            return batch
        spec, dataset, device = self._active
        batch["image"] = decode_batch(batch, spec, device, fallback=dataset)
        batch.pop("jpeg")
        batch.pop("cpu_image")
        batch.pop("on_gpu")
        return batch
