"""task=reconstruct: what a masked-image model (MAE, SimMIM, MaskFeat) fills in.

config -> images (files, folders, or samples of the dataset) -> model (+ checkpoint) -> masks
(seeded per image, a given .npy, or a mask ratio override) -> ``model.reconstruct`` with that
exact mask -> per image the four panels (original, masked, reconstruction, reconstruction +
visible; MaskFeat adds its HOG row), a grid of all, the numbers in ``reconstructions.npz`` and
each image's masked-patch error in ``summary.json``. MMSelfSup's version crashed on
non-norm-pix MAE, ignored the config's mean/std and drew one image per run.

The compute half (``make_masks``, ``reconstruct_batch``) is shared with the
``ReconstructionDump`` training callback.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image

from selfsup_vis.data.folders import IMAGE_EXTENSIONS, open_rgb
from selfsup_vis.data.masks import BlockwiseMaskGenerator, SimMIMMaskGenerator
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.plotting.log import log_figure, log_scalars, save_figure
from selfsup_vis.plotting.reconstruction import (
    ReconstructionPanels,
    reconstruction_figure,
    reconstruction_grid,
)
from selfsup_vis.tasks.common import instantiate_loggers, phase, run_dir, write_summary
from selfsup_vis.utils.io import write_with

log = logging.getLogger(__name__)

MIM_ALGORITHMS = ("mae", "simmim", "maskfeat")


# ----------------------------------------------------------------------------- model checks
def algorithm_of(model: Any) -> str:
    """'mae', 'simmim' or 'maskfeat' for a masked-image model; raises otherwise."""
    name = type(model).__name__.lower()
    if name in MIM_ALGORITHMS and callable(getattr(model, "reconstruct", None)):
        return name
    raise TypeError(
        f"reconstruction needs a masked-image model (MAE, SimMIM or MaskFeat); "
        f"got {type(model).__name__} '{getattr(model, 'model_name', '?')}'"
    )


def check_mim_config(model_cfg: Any) -> None:
    """Fail before loading any weights when ``model`` is not a masked-image model."""
    target = str(model_cfg.get("_target_", ""))
    cls = hydra.utils.get_class(target) if target else None
    if cls is None or cls.__name__.lower() not in MIM_ALGORITHMS:
        raise ValueError(
            f"task=reconstruct needs a masked-image model (model=mae*, simmim*, maskfeat*); "
            f"model={model_cfg.get('name')!r} is {target or 'unknown'}, which reconstructs nothing"
        )


# ----------------------------------------------------------------------------- masks
def mask_grid(model: Any) -> int:
    """Side of the patch grid the model's mask lives on (MAE/MaskFeat tokens, SimMIM patches)."""
    return int(model.grid)


def _image_generator(seed: int, position: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(position))


def make_masks(model: Any, n: int, seed: int, mask_ratio: float | None = None,
               start: int = 0) -> torch.Tensor:
    """(n, g, g) int64 masks (1 = masked), image ``start + i`` drawn from its own generator
    seeded by (seed, position), so a mask does not depend on the other images."""
    algo = algorithm_of(model)
    g = mask_grid(model)
    masks = []
    for i in range(n):
        gen = _image_generator(seed, start + i)
        if algo == "mae":
            ratio = model.mask_ratio if mask_ratio is None else float(mask_ratio)
            L = g * g
            keep = int(L * (1 - ratio))
            if not 0 < keep < L:
                raise ValueError(f"mask_ratio={ratio} keeps {keep} of {L} patches; use a ratio in (0, 1)")
            order = torch.argsort(torch.rand(L, generator=gen))
            m = torch.ones(L, dtype=torch.long)
            m[order[:keep]] = 0
            masks.append(m.view(g, g))
        elif algo == "simmim":
            ratio = model.mask_ratio if mask_ratio is None else float(mask_ratio)
            masks.append(SimMIMMaskGenerator(model.img_size, model.mask_patch_size, model.patch_size, ratio)(gen))
        else:  # maskfeat
            n_mask = model.num_masking_patches if mask_ratio is None else int(round(float(mask_ratio) * g * g))
            gen_ = BlockwiseMaskGenerator(g, n_mask, min(model.min_num_patches, n_mask))
            masks.append(gen_(gen))
    return torch.stack(masks).long()


def load_mask_file(path: str | Path, n: int, grid: int) -> torch.Tensor:
    """A user mask (.npy): (h, w) for every image or (N, h, w), 1 = masked. A coarser grid
    (dividing the model's) is upsampled; a finer one must be constant on each patch."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"task.mask: mask file not found: {p}")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"task.mask: cannot read {p} as a .npy array: {err}") from err
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.broadcast_to(arr, (n, *arr.shape))
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] not in (1, n):
        raise ValueError(f"task.mask: {p} has shape {arr.shape}; expected (h, w) or ({n}, h, w) "
                         f"with h = w on the model's {grid}x{grid} patch grid")
    if arr.shape[0] == 1:
        arr = np.broadcast_to(arr, (n, *arr.shape[1:]))
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"task.mask: {p} must hold only 0 (visible) and 1 (masked)")
    side = arr.shape[1]
    m = torch.tensor(np.array(arr), dtype=torch.long)
    if side == grid:
        return m
    if grid % side == 0:
        r = grid // side
        return m.repeat_interleave(r, 1).repeat_interleave(r, 2)
    if side % grid == 0:
        r = side // grid
        blocks = m.view(n, grid, r, grid, r)
        if not bool((blocks.amax(dim=(2, 4)) == blocks.amin(dim=(2, 4))).all()):
            raise ValueError(f"task.mask: {p} ({side}x{side}) is not constant on the model's "
                             f"{grid}x{grid} patches")
        return blocks[:, :, 0, :, 0].contiguous()
    raise ValueError(f"task.mask: {p} is {side}x{side}; the model's patch grid is {grid}x{grid} "
                     f"(give a mask on that grid or one whose side divides / is a multiple of it)")


# ----------------------------------------------------------------------------- compute
@dataclass
class Reconstruction:
    """One image's reconstruction: panels to draw and the numbers behind them."""

    name: str
    algorithm: str
    mask: np.ndarray  # (g, g) int, 1 = masked: the mask the model used
    original: np.ndarray  # (H, W, 3) display 0..1
    panels: ReconstructionPanels
    error: float  # mean over masked patches: normalised-pixel MSE (MAE/SimMIM) or HOG MSE
    error_kind: str
    display_error: float | None  # pixel MSE in display space (0..1) on masked pixels
    arrays: dict[str, np.ndarray]  # extra numbers for reconstructions.npz

    @property
    def mask_ratio(self) -> float:
        return float(self.mask.mean())


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().permute(1, 2, 0).cpu().numpy()


def _heat(values: np.ndarray, mask: np.ndarray, grid: int, size: int, vmax: float) -> np.ndarray:
    """Per-patch values of the masked patches as a colour image (H, W, 3), black elsewhere."""
    from matplotlib import colormaps

    v = np.clip(values.reshape(grid, grid) / max(vmax, 1e-12), 0, 1)
    rgb = colormaps["magma"](v)[..., :3] * mask.reshape(grid, grid)[..., None]
    r = size // grid
    return np.kron(rgb, np.ones((r, r, 1)))


@torch.no_grad()
def reconstruct_batch(model: Any, images: torch.Tensor, masks: torch.Tensor,
                      names: Sequence[str]) -> list[Reconstruction]:
    """Run ``model.reconstruct`` on normalised ``images`` (B, 3, H, W) with exactly ``masks``
    (B, g, g) and turn the outputs into per-image panels and errors."""
    algo = algorithm_of(model)
    device = next(model.parameters()).device
    images = images.to(device)
    masks = masks.to(device)
    out = model.reconstruct(images, mask=masks)
    used = out["mask"].reshape(masks.shape)
    if not torch.equal(used.long(), masks.long()):
        raise RuntimeError(f"{type(model).__name__}.reconstruct used another mask than the one given")
    B, g = images.shape[0], mask_grid(model)
    m_flat = used.reshape(B, -1).float()
    pix = out["mask_pixels"].float()  # (B, 1, H, W)
    results = []
    if algo in ("mae", "maskfeat"):
        per_patch = ((out["pred"].float() - out["target"].float()) ** 2).mean(-1)  # (B, L)
    else:
        se = ((out["pred"].float() - images.float()) ** 2).mean(1, keepdim=True)  # (B, 1, H, W)
        per_patch = torch.nn.functional.avg_pool2d(se, model.patch_size).reshape(B, -1)
    errors = (per_patch * m_flat).sum(1) / m_flat.sum(1).clamp(min=1)
    size = images.shape[-1]
    for i in range(B):
        mask_np = used[i].long().cpu().numpy()
        arrays: dict[str, np.ndarray] = {"per_patch_error": per_patch[i].cpu().numpy()}
        if algo == "maskfeat":
            disp = out["image_display"][i]
            orig = _hwc(disp)
            masked = _hwc(disp * (1 - pix[i]))
            pp = per_patch[i].cpu().numpy()
            vmax = float(np.percentile(pp[mask_np.reshape(-1) == 1], 99)) if mask_np.any() else 1.0
            heat = _heat(pp, mask_np, g, size, vmax)
            mixed_view = masked + heat * pix[i, 0].cpu().numpy()[..., None]
            tgt = out["target_cells"][i].float().mean(0).cpu().numpy()  # (nbins, h, w)
            prd = out["pred_cells"][i].float().mean(0).cpu().numpy()
            r = tgt.shape[-1] // g
            cell_mask = np.kron(mask_np, np.ones((r, r))).astype(np.float32)
            hog = [tgt, tgt * (1 - cell_mask), prd, tgt * (1 - cell_mask) + prd * cell_mask]
            panels = ReconstructionPanels(
                names[i], [orig, masked, heat, mixed_view],
                pixel_titles=("original", "masked", "HOG error (masked patches)", "visible + HOG error"),
                hog=hog, hog_cell_px=size // tgt.shape[-1], cell_mask=cell_mask)
            arrays.update(target_cells=out["target_cells"][i].cpu().numpy(),
                          pred_cells=out["pred_cells"][i].cpu().numpy(),
                          pred=out["pred"][i].cpu().numpy(), target=out["target"][i].cpu().numpy())
            results.append(Reconstruction(names[i], algo, mask_np, orig, panels, float(errors[i]),
                                          "hog_mse", None, arrays))
            continue
        p = {k: _hwc(v[i]) for k, v in out["panels"].items()}
        orig, rec = p["original"], p["reconstruction"]
        pm = pix[i, 0].cpu().numpy()
        disp_err = float((((rec - orig) ** 2).mean(-1) * pm).sum() / max(pm.sum(), 1))
        panels = ReconstructionPanels(names[i], [orig, p["masked"], rec, p["reconstruction_visible"]])
        arrays.update(reconstruction_raw=out["reconstruction"][i].float().cpu().numpy())
        if algo == "mae":
            arrays.update(pred=out["pred"][i].cpu().numpy(), target=out["target"][i].cpu().numpy())
        kind = "norm_pix_mse" if algo == "mae" and model.norm_pix else "pixel_mse"
        results.append(Reconstruction(names[i], algo, mask_np, orig, panels, float(errors[i]),
                                      kind, disp_err, arrays))
    return results


def save_arrays(path: Path, recs: Sequence[Reconstruction]) -> Path:
    """Everything behind the figures in one ``.npz`` (stacked over images)."""
    data: dict[str, np.ndarray] = {
        "names": np.asarray([r.name for r in recs]),
        "mask": np.stack([r.mask for r in recs]).astype(np.uint8),
        "original": np.stack([r.original for r in recs]).astype(np.float32),
        "panels": np.stack([np.stack(r.panels.pixels) for r in recs]).astype(np.float32),
        "error": np.asarray([r.error for r in recs], dtype=np.float64),
    }
    data["reconstruction"] = data["panels"][:, 2]
    for key in recs[0].arrays:
        data[key] = np.stack([r.arrays[key] for r in recs]).astype(np.float32)
    return write_with(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), **data))


# ----------------------------------------------------------------------------- images
def _slug(name: str) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_")[:80] or "image"


def expand_images(spec: Any, max_images: int) -> list[Path]:
    """Files named by ``task.images`` (a file, a folder, or a list of them), at most
    ``max_images``; a missing path is an error naming it."""
    items = list(spec) if isinstance(spec, list | tuple | ListConfig) else [spec]
    files: list[Path] = []
    for item in items:
        p = Path(str(item)).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"task.images: no images ({', '.join(IMAGE_EXTENSIONS)}) in {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"task.images: no such file or folder: {p}")
    if len(files) > max_images:
        log.info("task.images: %d images found, using the first %d (task.max_images)", len(files), max_images)
    return files[:max_images]


def load_image_files(files: Sequence[Path], model_cfg: Any, resize: str) -> tuple[torch.Tensor, list[str]]:
    """Decode (grayscale / RGBA / 16-bit converted) and resize to the model's input size."""
    if resize not in ("crop", "stretch"):
        raise ValueError(f"task.resize must be 'crop' or 'stretch', got {resize!r}")
    pipeline = pipeline_for_model(model_cfg, "eval", crop_pct=1.0 if resize == "crop" else None)
    size = int(model_cfg.img_size)
    patch = int(model_cfg.get("encoder_stride") or model_cfg.get("patch_size") or 1)
    images, names = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                mode = im.mode
        except Exception:
            mode = "?"
        pil = open_rgb(f)  # raises CorruptImageError naming the file
        if mode not in ("RGB", "?"):
            log.info("%s: %s image converted to RGB", f, mode)
        w, h = pil.size
        if (w, h) != (size, size):
            why = f" (not divisible by the patch size {patch})" if (w % patch or h % patch) else ""
            log.info("%s: %dx%d resized to %dx%d (%s)%s", f, w, h, size, size, resize, why)
        images.append(pipeline(pil)["image"])
        names.append(f.name)
    return torch.stack(images), names


def dataset_images(cfg: DictConfig, n: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` samples spread over the dataset's eval split (the synthetic default needs no files)."""
    dm = hydra.utils.instantiate(cfg.dataset)
    pipeline = pipeline_for_model(cfg.model, "eval", crop_pct=dm.eval_crop_pct)
    split = cfg.task.split or dm.eval_split
    ds = dm.dataset(split, pipeline)
    if len(ds) == 0:
        raise ValueError(f"reconstruct: dataset {dm.name} split {split!r} is empty")
    idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
    samples = [ds[int(i)] for i in idx]
    samples = [s for s in samples if s is not None]
    log.info("no task.images: using %d images of %s/%s", len(samples), dm.name, split)
    return torch.stack([s["image"] for s in samples]), [f"{s['index']}_{s['name']}" for s in samples]


def _device(t: DictConfig, cfg: DictConfig) -> torch.device:
    if t.device != "auto":
        return torch.device(t.device)
    accel = str(cfg.trainer.get("accelerator", "cpu"))
    return torch.device("cuda" if torch.cuda.is_available() and accel != "cpu" else "cpu")


# ----------------------------------------------------------------------------- task
def run(cfg: DictConfig) -> dict[str, Any]:
    from selfsup_vis.models import build_model

    t = cfg.task
    check_mim_config(cfg.model)
    with phase("images"):
        if t.images is None or (isinstance(t.images, ListConfig | list) and len(t.images) == 0):
            images, names = dataset_images(cfg, t.max_images)
        else:
            images, names = load_image_files(expand_images(t.images, t.max_images), cfg.model, t.resize)
    with phase("model"):
        model = build_model(cfg.model).eval().to(_device(t, cfg))
        algo = algorithm_of(model)
    n, g = images.shape[0], mask_grid(model)
    if t.mask:
        masks = load_mask_file(t.mask, n, g)
        mask_source = str(t.mask)
    else:
        masks = make_masks(model, n, t.seed, t.mask_ratio)
        mask_source = f"seed {t.seed}" + (f", mask_ratio {t.mask_ratio}" if t.mask_ratio is not None else "")
    recs: list[Reconstruction] = []
    with phase(f"reconstruct {n} images"):
        for s in range(0, n, t.batch_size):
            try:
                recs += reconstruct_batch(model, images[s : s + t.batch_size], masks[s : s + t.batch_size],
                                          names[s : s + t.batch_size])
            except ValueError as err:
                if not t.mask:
                    raise
                raise ValueError(f"task.mask={t.mask}: {err}") from err
    out = run_dir()
    loggers = instantiate_loggers(cfg)
    records = []
    for i, r in enumerate(recs):
        fig = reconstruction_figure(r.panels, f"{cfg.model.name} · {r.name} · masked {r.mask_ratio:.0%} · "
                                              f"{r.error_kind} {r.error:.4f}")
        files = save_figure(fig, out / "reconstruct" / f"{i:03d}_{_slug(r.name)}", t.formats)
        log_figure(loggers, f"reconstruct/{i:03d}_{_slug(r.name)}", fig, step=0)
        fig.clf()
        records.append({"index": i, "name": r.name, "mask_ratio": r.mask_ratio, "masked_error": r.error,
                        "error_kind": r.error_kind, "display_mse": r.display_error,
                        "files": [str(f) for f in files]})
    grid = reconstruction_grid([r.panels for r in recs], f"{cfg.model.name} ({algo}) · masks: {mask_source}")
    grid_files = save_figure(grid, out / "reconstruction_grid", t.formats)
    log_figure(loggers, "reconstruct/grid", grid, step=0)
    npz = save_arrays(out / "reconstructions.npz", recs)
    mean_err = float(np.mean([r.error for r in recs]))
    log_scalars(loggers, {"reconstruct/masked_error": mean_err,
                          "reconstruct/mask_ratio": float(np.mean([r.mask_ratio for r in recs]))}, step=0)
    log.info("mean masked-patch error (%s): %.5f over %d images", recs[0].error_kind, mean_err, n)
    summary = {
        "task": "reconstruct",
        "model": cfg.model.name,
        "algorithm": algo,
        "checkpoint": cfg.model.get("checkpoint"),
        "norm_pix": bool(getattr(model, "norm_pix", False)),
        "normalization": {"mean": list(model.mean), "std": list(model.std)},
        "mask": {"source": mask_source, "grid": [g, g], "seed": t.seed, "mask_ratio": t.mask_ratio},
        "error_kind": recs[0].error_kind,
        "mean_masked_error": mean_err,
        "images": records,
        "grid": [str(f) for f in grid_files],
        "arrays": str(npz),
        "config": OmegaConf.to_container(t, resolve=True),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_summary(summary)
    return summary
