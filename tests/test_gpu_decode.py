"""GPU JPEG decode (data.gpu_decode): per-file fallback, and the batched decode + resize + crop +
normalise path against the CPU eval pipeline on real JPEGs made from cue-conflict images. The
batched path runs with device='cpu' here (torchvision's decode_jpeg decodes on the CPU too);
the same test on CUDA is marked gpu."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from selfsup_vis.data.base import CorruptImageError
from selfsup_vis.data.folders import image_folder_dataset
from selfsup_vis.data.gpu_decode import (
    EncodedImageDataset,
    collate_encoded,
    decode_batch,
    eval_spec,
    gpu_unsupported_reason,
    resolve_decode,
)
from selfsup_vis.data.transforms import build_pipeline, pipeline_for_model
from selfsup_vis.models import build_model
from tests.conftest import DATA, compose_cfg, needs_shared

SIZES = [(224, 224), (320, 256), (200, 300), (257, 171)]


def _cue_images(n: int) -> list[Image.Image]:
    root = needs_shared(DATA / "cue-conflict")
    files = sorted(root.glob("*/*.png"))[:: 97][:n]
    return [Image.open(f).convert("RGB") for f in files]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """class folders of baseline JPEGs (several sizes), one PNG, one CMYK and one progressive
    JPEG: the folder a user points dataset.root at."""
    root = tmp_path_factory.mktemp("jpegs")
    images = _cue_images(12)
    for i, im in enumerate(images):
        d = root / f"c{i % 3}"
        d.mkdir(exist_ok=True)
        im.resize(SIZES[i % len(SIZES)], Image.BICUBIC).save(d / f"img{i}.jpg", quality=90)
    images[0].save(root / "c0" / "other.png")
    images[1].convert("CMYK").save(root / "c1" / "cmyk.jpg", quality=90)
    images[2].save(root / "c2" / "progressive.jpg", quality=90, progressive=True)
    return root


def _bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, **kw)
    return buf.getvalue()


def test_fallback_decision_per_file(folder):
    im = _cue_images(1)[0]
    assert gpu_unsupported_reason(_bytes(im, format="JPEG")) is None
    assert gpu_unsupported_reason(_bytes(im.convert("L"), format="JPEG")) is None
    assert gpu_unsupported_reason((folder / "c0" / "other.png").read_bytes()) == "not a JPEG"
    assert gpu_unsupported_reason((folder / "c1" / "cmyk.jpg").read_bytes()) == "CMYK JPEG"
    assert gpu_unsupported_reason((folder / "c2" / "progressive.jpg").read_bytes()) == "progressive JPEG"
    assert gpu_unsupported_reason(_bytes(im, format="JPEG")[:200]) is not None  # truncated header
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: PIL's path turns it upright, nvJPEG would not
    assert gpu_unsupported_reason(_bytes(im, format="JPEG", exif=exif)) == "EXIF orientation"


def _batches(folder: Path, pipeline, **kw):
    base = image_folder_dataset(folder, pipeline, **kw)
    loader = DataLoader(EncodedImageDataset(base), batch_size=6, collate_fn=collate_encoded)
    return base, list(loader)


def _check_matches_cpu_pipeline(folder: Path, device: str) -> None:
    cfg = compose_cfg(["model=mocov2_tiny"]).model
    pipeline = pipeline_for_model(cfg, "eval")
    spec = eval_spec(pipeline)
    assert (spec.resize, spec.crop) == (73, 64)
    base, batches = _batches(folder, pipeline)
    model = build_model(cfg).to(device).eval()
    layer = model.predict_layers[0]
    n_gpu = 0
    for batch in batches:
        images = decode_batch(batch, spec, device, fallback=base)
        reference = torch.stack([base[int(i)]["image"] for i in batch["index"]]).to(device)
        assert images.shape == reference.shape and images.device.type == torch.device(device).type
        # within a grey level or two of PIL's decode + bicubic (in normalised units: ~0.02-0.04)
        assert (images - reference).abs().mean() < 0.02
        with torch.no_grad():
            f_ours = model.extract_features(images, [layer])[layer].flatten(1).float()
            f_ref = model.extract_features(reference, [layer])[layer].flatten(1).float()
        cos = torch.nn.functional.cosine_similarity(f_ours, f_ref)
        print(f"max abs diff {float((images - reference).abs().max()):.2e}, min cosine {float(cos.min()):.5f}")
        assert cos.min() >= 0.999, cos
        n_gpu += int(batch["on_gpu"].sum())
    names = [n for b in batches for n, g in zip(b["name"], b["on_gpu"].tolist(), strict=True) if not g]
    assert sorted(Path(n).name for n in names) == ["cmyk.jpg", "other.png", "progressive.jpg"]
    assert n_gpu == 12


def test_batched_decode_matches_cpu_pipeline_on_cpu(folder):
    _check_matches_cpu_pipeline(folder, "cpu")


def test_stretch_pipeline_and_unsupported_steps():
    spec = eval_spec(build_pipeline("eval", 32, (0.5,) * 3, (0.25,) * 3, crop_pct=None))
    assert spec.resize == (32, 32) and spec.crop is None
    with pytest.raises(ValueError, match="no GPU equivalent"):
        eval_spec(build_pipeline("mae", 32, (0.5,) * 3, (0.25,) * 3))


def test_corrupt_files_keep_todays_behaviour(folder, tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    for i, im in enumerate(_cue_images(3)):
        im.save(root / "a" / f"{i}.jpg")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    pipeline = build_pipeline("eval", 32, (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        _batches(root, pipeline)
    base, batches = _batches(root, pipeline, skip_corrupt=True)
    assert sum(len(b["index"]) for b in batches) == 3
    images = decode_batch(batches[0], eval_spec(pipeline), "cpu", fallback=base)
    assert images.shape == (3, 3, 32, 32)


def test_resolve_decode(folder):
    pipeline = build_pipeline("eval", 32, (0.5,) * 3, (0.25,) * 3)
    ds = image_folder_dataset(folder, pipeline)
    assert resolve_decode("auto", on_cuda=True, pipeline=pipeline, dataset=ds)[0] == "gpu"
    mode, why = resolve_decode("auto", on_cuda=False, pipeline=pipeline, dataset=ds)
    assert mode == "cpu" and "not on CUDA" in why
    assert resolve_decode("cpu", on_cuda=True, pipeline=pipeline, dataset=ds)[0] == "cpu"
    with pytest.raises(ValueError, match="dataset.decode=gpu: the trainer is not on CUDA"):
        resolve_decode("gpu", on_cuda=False, pipeline=pipeline, dataset=ds)
    with pytest.raises(ValueError, match="dataset.decode must be one of"):
        resolve_decode("nvjpeg", on_cuda=True, pipeline=pipeline, dataset=ds)
    assert np.all([isinstance(p, Path) for p in ds.paths])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_decode_matches_cpu_pipeline_on_cuda(folder):
    _check_matches_cpu_pipeline(folder, "cuda")


def test_datamodule_hook_on_cpu_uses_the_pil_path(folder):
    from selfsup_vis.data.datamodule import ImageFolderDataModule

    with pytest.raises(ValueError, match="dataset.decode must be one of"):
        ImageFolderDataModule(root=str(folder), decode="nvjpeg")
    dm = ImageFolderDataModule(root=str(folder), batch_size=4, decode="auto")
    dm.configure(eval=build_pipeline("eval", 32, (0.5,) * 3, (0.25,) * 3))
    batch = next(iter(dm.predict_dataloader()))
    assert dm.gpu_decode.used == {"mode": "cpu", "why": "auto: the trainer is not on CUDA"}
    assert dm.on_before_batch_transfer(batch, 0) is batch and batch["image"].shape == (4, 3, 32, 32)
    dm_gpu = ImageFolderDataModule(root=str(folder), decode="gpu")
    dm_gpu.configure(eval=build_pipeline("eval", 32, (0.5,) * 3, (0.25,) * 3))
    with pytest.raises(ValueError, match="dataset.decode=gpu: the trainer is not on CUDA"):
        dm_gpu.predict_dataloader()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tsne_task_decodes_on_the_gpu(folder, tmp_path):
    import json

    from tests.conftest import assert_ok, run_cli

    proc = run_cli(["task=tsne", "model=mocov2_tiny", "trainer=gpu", "dataset=image_folder",
                    f"dataset.root={folder}", "dataset.decode=gpu", f"hydra.run.dir={tmp_path / 'o'}"],
                   tmp_path, env={"SELFSUP_VIS_CACHE": str(tmp_path / "cache")})
    assert_ok(proc)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["decode"]["mode"] == "gpu" and summary["n_samples"] == 15
