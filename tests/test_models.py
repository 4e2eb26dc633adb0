"""The tiny model configs: features, layer names, training step, reconstruction panels."""

from __future__ import annotations

import pytest
import torch

from selfsup_vis.config import compose
from selfsup_vis.models import MaskedReconstruction, build_model

TINY = ["mae_tiny", "simmim_tiny", "maskfeat_tiny", "mocov2_tiny", "classifier_tiny"]
MIM = ["mae_tiny", "simmim_tiny", "maskfeat_tiny"]
PANELS = {"original", "masked", "reconstruction", "reconstruction_visible"}


@pytest.fixture(scope="module")
def models() -> dict:
    out = {}
    for name in TINY:
        cfg = compose([f"model={name}"])
        torch.manual_seed(0)
        out[name] = (cfg.model, build_model(cfg.model).eval())
    return out


def _images(cfg, b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", TINY)
def test_extract_features_every_layer(models, name: str) -> None:
    cfg, m = models[name]
    layers = m.available_layers()
    assert layers and m.default_layers()
    feats = m.extract_features(_images(cfg), layers)
    assert list(feats) == layers
    for k, v in feats.items():
        assert v.dim() == 2 and v.shape[0] == 2 and torch.isfinite(v).all(), k
    tok = sorted(getattr(m, "token_layers", ()))
    if tok:
        f = m.extract_features(_images(cfg), [f"{tok[0]}.cls", f"{tok[0]}.mean", f"{tok[0]}.cls+mean"])
        d = f[f"{tok[0]}.cls"].shape[1]
        assert f[f"{tok[0]}.cls+mean"].shape[1] == 2 * d


@pytest.mark.parametrize("name", TINY)
def test_unknown_layer_lists_valid_names(models, name: str) -> None:
    cfg, m = models[name]
    with pytest.raises(ValueError) as e:
        m.extract_features(_images(cfg), ["no_such_layer"])
    assert "no_such_layer" in str(e.value) and m.available_layers()[0] in str(e.value)


@pytest.mark.parametrize("name", TINY)
def test_predict_step_contract(models, name: str) -> None:
    cfg, m = models[name]
    batch = {"image": _images(cfg), "label": torch.tensor([1, 2]), "index": torch.tensor([5, 6])}
    out = m.predict_step(batch, 0)
    assert set(out) >= {"features", "labels", "index"}
    assert torch.equal(out["index"], batch["index"])
    assert set(out["features"]) == set(m.default_layers())


@pytest.mark.parametrize("name", TINY)
def test_training_step_gives_finite_loss_and_grads(models, name: str) -> None:
    cfg, m = models[name]
    x = _images(cfg)
    batch = {"image": x, "label": torch.tensor([1, 2]), "index": torch.tensor([0, 1])}
    if name == "mocov2_tiny":
        batch["views"] = [x, x.flip(-1)]
    if name in ("simmim_tiny", "maskfeat_tiny"):
        batch["mask"] = m.make_mask(2, torch.Generator().manual_seed(0))
    m.train()
    m.log = lambda *a, **k: None  # no trainer attached
    ptr = int(getattr(m, "queue_ptr", torch.zeros(1)))
    loss = m.training_step(batch, 0)
    m.eval()
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    m.zero_grad(set_to_none=True)
    if name == "mocov2_tiny":
        assert int(m.queue_ptr) == (ptr + 2) % m.queue.shape[1]


@pytest.mark.parametrize("name", MIM)
def test_reconstruct_outputs(models, name: str) -> None:
    cfg, m = models[name]
    x = _images(cfg)
    out = m.reconstruct(x, generator=torch.Generator().manual_seed(3))
    assert isinstance(out, MaskedReconstruction)
    assert out.space == ("features" if name == "maskfeat_tiny" else "pixels")
    assert out.per_patch_error.shape == (2, m.grid**2) and torch.isfinite(out.loss)
    if name == "maskfeat_tiny":  # HOG cells; drawn by the one HOG renderer (reconstruction.plots)
        assert out.hog["target"].shape == out.hog["pred"].shape == out.hog["mixed"].shape
        assert out.reconstruction is None
    if name == "mae_tiny":  # norm-pix: no image without the hidden patches' statistics
        assert out.norm_pix_eps is not None and out.reconstruction is None
    assert set(out.panels) == (PANELS if name == "simmim_tiny" else set())
    for k, v in out.panels.items():
        assert v.shape == (2, 3, cfg.img_size, cfg.img_size), k
        assert float(v.min()) >= 0 and float(v.max()) <= 1, k
    mask = out.mask
    assert mask.dtype == torch.long and set(mask.unique().tolist()) <= {0, 1}
    # the mask that was used can be fed back and gives the same prediction
    again = m.reconstruct(x, mask=mask)
    assert torch.equal(again.mask, mask)
    assert torch.allclose(again.pred, out.pred, atol=1e-5)
    vis = 1 - out.mask_pixels
    if name == "simmim_tiny":  # visible pixels are the original ones
        orig, rv = out.panels["original"], out.panels["reconstruction_visible"]
        assert torch.allclose(orig * vis, rv * vis, atol=1e-5)


def test_mae_reconstruction_is_exact_for_perfect_prediction(models) -> None:
    """De-normalising per patch: a prediction equal to the norm-pix target gives the image."""
    cfg, m = models["mae_tiny"]
    x = _images(cfg)
    out = m.reconstruct(x)
    from selfsup_vis.models.mae import patchify, unpatchify

    raw = patchify(x, m.patch_size)
    rec = unpatchify(out.target * (raw.var(-1, keepdim=True) + 1e-6) ** 0.5 + raw.mean(-1, keepdim=True),
                     m.patch_size)
    assert torch.allclose(rec, x, atol=1e-4)


def test_mae_non_norm_pix(models) -> None:
    cfg, _ = models["mae_tiny"]
    m = build_model({**dict(cfg), "norm_pix": False})
    out = m.reconstruct(_images(cfg))
    assert out.error_kind == "pixel_mse"
    assert torch.allclose(out.reconstruction, __import__("selfsup_vis.models.mae", fromlist=["unpatchify"])
                          .unpatchify(out.pred, m.patch_size))


def test_classifier_logits(models) -> None:
    cfg, m = models["classifier_tiny"]
    assert m(_images(cfg)).shape == (2, 1000)


def test_timm_classifier_by_name() -> None:
    cfg = compose(["model=timm", "model.name=resnet18", "model.img_size=32", "model.num_classes=7"])
    m = build_model(cfg.model).eval()
    assert m.model.default_cfg["architecture"] == "resnet18"
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert set(m.extract_features(torch.randn(1, 3, 32, 32), ["pre_logits", "logits"])) == {"pre_logits", "logits"}
    with pytest.raises(Exception, match="no_such_net"):
        build_model({**dict(cfg.model), "name": "no_such_net"})


def test_every_layer_and_random_parts_are_constructor_arguments(models) -> None:
    """Built once: ``predict_layers=["all"]`` asks for every layer without reconfiguring the
    built model, and ``allow_random_parts`` is a constructor argument (from the config)."""
    cfg, m = models["mae_tiny"]
    every = build_model(cfg, predict_layers=["all"])
    assert every.predict_layers == m.available_layers()
    assert m.allow_random_parts is False
    assert build_model({**dict(cfg), "allow_random_parts": True}).allow_random_parts is True
