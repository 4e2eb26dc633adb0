"""Dense features without a model: PCA-RGB recovers known parts, a joint basis colours the same
part alike in two images, a saved basis reproduces the RGB exactly and refuses another feature
size, similarity of a query with itself is 1 and matching is symmetric, planted high-norm
tokens are the outliers found (and only they), and the PCA streamed in chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup_vis.dense.metric import centre_blob, foreground_pixels, iou
from selfsup_vis.dense.norms import norm_maps, norm_stats
from selfsup_vis.dense.pca import DenseBasis, fit_basis, otsu_threshold, tensor_chunks
from selfsup_vis.dense.similarity import auto_query, mutual_matches, query_patch, similarity_maps

D = 48


def _parts_image(seed: int, h: int = 12, w: int = 12, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, w, D) features: background (label 0) plus three object parts (labels 1..3) laid out
    as blocks in a seed-dependent place, each part along its own known direction."""
    g = torch.Generator().manual_seed(seed)
    # 5 known orthonormal directions spread over all D dims (so standardising each dim keeps
    # the structure): d0 background, d1..d3 the parts, d4 an offset shared by the object
    dirs = torch.linalg.qr(torch.randn(D, 5, generator=torch.Generator().manual_seed(123)))[0].T
    labels = torch.zeros(h, w, dtype=torch.long)
    r0, c0 = 2 + seed % 3, 2 + (seed * 2) % 3
    labels[r0 : r0 + 3, c0 : c0 + 6] = 1
    labels[r0 + 3 : r0 + 6, c0 : c0 + 3] = 2
    labels[r0 + 3 : r0 + 6, c0 + 3 : c0 + 6] = 3
    feats = torch.where(labels[..., None] == 0, 4.0 * dirs[0], 4.0 * dirs[4])
    for k in (1, 2, 3):
        feats = feats + (labels[..., None] == k) * 3.0 * dirs[k]
    return feats + noise * torch.randn(h, w, D, generator=g), labels


def _colour_clusters(rgb: torch.Tensor, labels: torch.Tensor) -> None:
    """The colour clusters are the parts: every object patch is nearest its own part's mean
    colour, the part means are distinct colours, and the background is black. (Three parts span
    two dimensions around their mean, so the third channel is noise stretched to [0, 1] by the
    min-max scaling -- as in the papers -- equally in every part.)"""
    parts = torch.tensor([1, 2, 3])
    means = torch.stack([rgb[labels == k].mean(0) for k in parts])
    obj = labels > 0
    nearest = parts[torch.cdist(rgb[obj], means).argmin(1)]
    assert torch.equal(nearest, labels[obj])
    assert torch.pdist(means).min() > 0.3
    assert rgb[labels == 0].abs().max() == 0


def _fit(x: torch.Tensor, **kw) -> DenseBasis:
    return fit_basis(tensor_chunks(x.reshape(-1, D), rows=50), D, **kw)


@pytest.mark.parametrize("normalisation", ["none", "l2", "standardise"])
def test_pca_rgb_recovers_known_parts_exactly(normalisation):
    feats, labels = _parts_image(0)
    basis = _fit(feats, normalisation=normalisation)
    out = basis.apply(feats.reshape(-1, D))
    fg = out["foreground"].reshape(labels.shape)
    assert torch.equal(fg, labels > 0)  # the smaller side of Otsu's PC1 split is the object
    _colour_clusters(out["rgb"].reshape(*labels.shape, 3), labels)
    assert basis.threshold_rule == "otsu" and basis.normalisation == normalisation


def test_foreground_sign_and_threshold_can_be_overridden():
    feats, labels = _parts_image(0)
    auto = _fit(feats)
    flipped = _fit(feats, fg_sign="positive" if auto.fg_sign < 0 else "negative")
    assert torch.equal(flipped.foreground_of(feats.reshape(-1, D)).reshape(labels.shape), labels == 0)
    fixed = _fit(feats, threshold=auto.threshold)
    assert fixed.threshold_rule == "given" and fixed.threshold == auto.threshold


def test_joint_basis_gives_the_same_part_the_same_colour_in_two_images():
    (fa, la), (fb, lb) = _parts_image(1), _parts_image(2)
    assert not torch.equal(la, lb)  # the parts sit elsewhere in the second image
    basis = _fit(torch.cat([fa.reshape(-1, D), fb.reshape(-1, D)]))
    ra = basis.apply(fa.reshape(-1, D))["rgb"].reshape(*la.shape, 3)
    rb = basis.apply(fb.reshape(-1, D))["rgb"].reshape(*lb.shape, 3)
    _colour_clusters(torch.cat([ra, rb]), torch.cat([la, lb]))  # one cluster per part across both


def test_saved_basis_reused_gives_identical_rgb_and_refuses_another_dimension(tmp_path):
    feats, _ = _parts_image(3)
    basis = _fit(feats, provenance={"model": "test", "layer": "block3"})
    path = basis.save(tmp_path / "pca_basis.npz")
    again = DenseBasis.load(tmp_path, feature_dim=D)  # a run directory works too
    other, _ = _parts_image(4)
    for x in (feats, other):
        a, b = basis.apply(x.reshape(-1, D)), again.apply(x.reshape(-1, D))
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["foreground"], b["foreground"])
    assert "block3" in again.provenance["saved"]
    with pytest.raises(ValueError, match=r"basis of feature dimension 48, but the layer has 64-dim"):
        DenseBasis.load(path, feature_dim=64)
    with pytest.raises(FileNotFoundError, match="no PCA basis"):
        DenseBasis.load(tmp_path / "nowhere")


def test_otsu_splits_two_modes():
    v = torch.cat([torch.full((300,), -2.0), torch.full((100,), 3.0)]) + 0.01 * torch.randn(400)
    assert -1.9 < otsu_threshold(v) < 2.9


def test_similarity_of_a_query_with_itself_is_one_and_matching_is_symmetric():
    g = torch.Generator().manual_seed(0)
    grids = torch.randn(3, 5, 7, 16, generator=g)
    sim = similarity_maps(grids[1, 2, 3], grids)
    assert sim[1, 2, 3] == pytest.approx(1.0, abs=1e-6) and float(sim.max()) <= 1 + 1e-6
    a, b = torch.randn(40, 16, generator=g), torch.randn(50, 16, generator=g)
    ab, ba = mutual_matches(a, b), mutual_matches(b, a)
    assert ab.num_mutual == ba.num_mutual >= 1
    assert set(zip(ab.a.tolist(), ab.b.tolist())) == set(zip(ba.b.tolist(), ba.a.tolist()))
    same = mutual_matches(a, a)
    assert same.num_mutual == 40 and torch.equal(same.a, same.b)
    assert mutual_matches(a, b, top_k=2).a.numel() == min(2, ab.num_mutual)
    assert query_patch((31.9, 0), (32, 64), (4, 8)) == (3, 0)
    with pytest.raises(ValueError, match="outside the 32x64 input image"):
        query_patch((40, 0), (32, 64), (4, 8))
    fg = torch.zeros(5, 5, dtype=torch.bool)
    fg[3:5, 0:2] = True
    assert fg[auto_query(fg)]


def test_outliers_are_exactly_the_planted_high_norm_tokens():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4, 14, 14, 64, generator=g)
    planted = torch.zeros(4, 14, 14, dtype=torch.bool)
    planted[0, 3, 4] = planted[1, 10, 2] = planted[3, 7, 7] = True
    feats[planted] *= 10  # ~10x the typical norm, as the register paper's artefacts
    regs = torch.randn(4, 2, 64, generator=g) * 20
    mask, stats = norm_stats(norm_maps(feats), k=6.0, cls=feats[:, 0, 0], registers=regs)
    assert torch.equal(mask, planted)
    assert stats.outlier_fraction == pytest.approx(3 / (4 * 14 * 14))
    assert stats.register_mean > 100 and stats.register_max >= stats.register_mean


def test_iou_and_centre_blob():
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    assert torch.allclose(iou(masks, masks), torch.ones(2, dtype=torch.float64))
    fg = torch.zeros(2, 4, 4, dtype=torch.bool)
    fg[:, 1:3, 1:3] = True
    up = foreground_pixels(fg, (32, 32))  # bilinear: the square's edges exact, its corners rounded
    assert torch.equal(up[:, 16], masks[:, 16]) and torch.equal(up[:, :, 16], masks[:, :, 16])
    assert 0.9 < float(iou(up, masks)[0]) < 1
    blob = centre_blob(masks)
    assert abs(int(blob[0].sum()) - 256) < 20 and 0.7 < float(iou(blob, masks)[0]) < 1


def test_streamed_pca_finds_the_foreground_direction_across_chunks():
    """32 images x 196 patches x 768 dims streamed in chunks smaller than an image set: the
    planted foreground (60 of every 196 patches) is found exactly. Its time at ViT-B/16 scale
    (256 images) is scripts/bench_dense.py's, beside scikit-learn's."""
    x = np.random.default_rng(0).standard_normal((32 * 196, 768), dtype=np.float32)
    planted = np.arange(x.shape[0]) % 196 < 60
    x[:, 0] += np.where(planted, 8.0, 0.0)
    basis = fit_basis(tensor_chunks(x, rows=1000), 768)
    out = basis.apply(torch.from_numpy(x))
    assert out["rgb"].shape == (32 * 196, 3) and np.array_equal(out["foreground"].numpy(), planted)
