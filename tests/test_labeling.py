"""One labeling throughout (``task.color_by`` drives every number, file and map), cue-conflict
kNN without same-source neighbours, and every embedding figure naming how it was made."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from matplotlib.text import Text

from selfsup_vis.data.synthetic import SyntheticShapes
from selfsup_vis.embedding import (
    EmbedParams,
    compute_embedding,
    layer_figure,
    map_layer,
    resolve_labelings,
)
from selfsup_vis.embedding.backends import has_umap
from selfsup_vis.embedding.labels import (
    SOURCE_EXCLUSION,
    parse_labeling_specs,
    scoring,
    stimulus_sources,
)
from selfsup_vis.embedding.layer_maps import read_layer_map, write_layer_map
from selfsup_vis.embedding.plots import format_quality
from selfsup_vis.embedding.quality import HEADLINE_K, embedding_quality, knn_neighbours
from selfsup_vis.report.summaries import KNN_KEYS
from tests.conftest import run_inprocess


def _texts(fig) -> str:
    """Every text object of a figure (titles, legend, corner box, footer), joined."""
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def _conflict_pixels(per_pair: int = 3, classes: int = 6, size: int = 16):
    ds = SyntheticShapes("conflict", num_classes=classes, conflict_per_pair=per_pair, image_size=32)
    names = list(ds.names)
    x = np.stack([np.asarray(ds.load_image(i).convert("RGB").resize((size, size)), dtype=np.float32).ravel() / 255
                  for i in range(len(names))])
    return x, names, np.asarray(ds.labels), list(ds.classes)


def test_stimulus_sources_define_the_source_images():
    names = ["airplane/airplane1-bicycle2.png", "airplane/airplane1-clock1.png", "bicycle/bicycle2-cat1.png",
             "cat/cat3-bicycle2.png"]
    g = stimulus_sources(names)
    assert g.shape == (4, 2)
    assert g[0, 0] == g[1, 0] and g[0, 1] == g[3, 1]  # same shape image; same texture image
    assert g[2, 0] != g[0, 1]  # bicycle2 as a shape image is not bicycle2 as a texture image
    assert stimulus_sources(["cat/train_cat1.png", *names]) is None  # not all stimuli: no exclusion


def test_same_source_exclusion_on_synthetic_conflict_pixels(capsys):
    """Raw pixels of the synthetic conflict split: with same-source neighbours counted, kNN
    finds the label through copies of the same shape image; without them it must generalise."""
    x, names, labels, classes = _conflict_pixels()
    colour, others = resolve_labelings(parse_labeling_specs("label", ["texture"]), names, labels, classes)
    score = scoring(colour, others, names)
    assert score["exclude_groups"] is not None and score["exclusion_note"] == SOURCE_EXCLUSION
    coords = x[:, :2]  # any 2-D points: only the feature-space numbers are compared here
    kw = {"metric": "euclidean", "extra_labels": score["extra_labels"]}
    leak = embedding_quality(x, coords, score["labels"], **kw)
    fair = embedding_quality(x, coords, score["labels"], exclude_groups=score["exclude_groups"],
                             exclusion_note=score["exclusion_note"], **kw)
    with capsys.disabled():
        print(f"\npixel kNN@{HEADLINE_K} (label) on {len(names)} synthetic conflict stimuli: "
              f"with same-source neighbours {leak[f'knn_feat@{HEADLINE_K}']:.3f}, "
              f"without {fair[f'knn_feat@{HEADLINE_K}']:.3f}; texture "
              f"{leak['labelings']['texture'][f'knn_feat@{HEADLINE_K}']:.3f} -> "
              f"{fair['labelings']['texture'][f'knn_feat@{HEADLINE_K}']:.3f}")
    assert "knn_exclusion" not in leak and fair["knn_exclusion"] == SOURCE_EXCLUSION
    assert fair[f"knn_feat@{HEADLINE_K}"] < leak[f"knn_feat@{HEADLINE_K}"]
    # no query keeps a neighbour made from one of its own source images, and none is lost
    g = score["exclude_groups"]
    nb = knn_neighbours(x, HEADLINE_K, None, g)
    assert nb.shape == (len(names), HEADLINE_K)
    assert not (g[nb] == g[:, None, :]).any() and not (nb == np.arange(len(names))[:, None]).any()


def test_one_k_for_figures_headline_and_ranking():
    q = {f"knn_feat@{k}": 0.5 + k / 100 for k in (10, 20)} | {f"knn_2d@{k}": 0.4 for k in (10, 20)}
    assert f"kNN@{HEADLINE_K} feat 0.700" in format_quality(q) and "@10" not in format_quality(q)
    assert f"knn_feat@{HEADLINE_K}" in KNN_KEYS and f"knn_2d@{HEADLINE_K}" in KNN_KEYS


def test_lowered_perplexity_is_named_with_its_reason():
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    with pytest.warns(UserWarning, match="perplexity"):
        res = compute_embedding(x, EmbedParams(backend="sklearn", n_iter=250, seed=0))
    d = res.params["description"]
    assert d["method"] == "t-SNE" and d["backend"] == "sklearn" and d["perplexity"] == pytest.approx(13)
    assert d["perplexity_note"] == "perplexity 30 → 13: n=40 needs perplexity < n/3"
    assert "t-SNE (sklearn) · perplexity 30 → 13: n=40 needs perplexity < n/3 · 250 iterations" in d["text"]
    assert "space: cosine (L2-normalised)" in d["text"]


@pytest.mark.slow  # umap-learn's numba compilation: ~10 s of CPU
@pytest.mark.skipif(not has_umap(), reason="umap-learn not installed")
def test_umap_footer_and_summary_say_umap():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    x = (rng.normal(size=(60, 16)) + labels[:, None] * 3).astype(np.float32)
    colour, _ = resolve_labelings(parse_labeling_specs("label", []), [str(i) for i in range(60)], labels,
                                  ["a", "b", "c"])
    m = map_layer("layer", x, labels, EmbedParams(backend="umap", n_iter=50, seed=0), owner="test",
                  quality_sample=1000)
    assert m.summary([])["method"]["method"] == "UMAP" and m.summary([])["method"]["backend"] == "umap"
    fig = layer_figure(m, colour, "umap map")
    footer = fig.get_supxlabel()
    assert footer.startswith("UMAP (umap-learn) · n_neighbors 15, min_dist 0.1 · 50 epochs")
    assert "tsne" not in _texts(fig).lower() and "t-sne" not in _texts(fig).lower()
    assert "perplexity" not in footer and "colour and numbers: label (3 classes)" in footer


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_color_by_texture_numbers_equal_a_run_labelled_by_texture(tmp_path):
    """``color_by=texture`` on the synthetic conflict split: every number is the texture one,
    and equals that of ``task.features`` on the same features whose labels ARE the textures."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["task=tsne", "logger=none", "task.n_jobs=1", "task.formats=[png]"]
    run_inprocess([*common, "model=mocov2_tiny", "task.split=conflict", "dataset.conflict_per_pair=3",
                   "task.max_samples_per_class=5", "task.layers=[layer4]", "task.color_by=texture",
                   "task.report_thumbnails=0"], a)
    sa = json.loads((a / "summary.json").read_text())
    q = sa["layers"]["layer4"]["quality"]
    k = f"knn_feat@{HEADLINE_K}"
    assert sa["color_by"] == "texture" and q["labeling"] == "texture"
    assert q[k] == sa["labelings"]["texture"]["quality"]["layer4"][k]  # top level = texture's
    assert set(sa["labelings"]) == {"texture", "label"} and sa["labelings"]["texture"]["colour"]
    assert sa["headline"][f"{k}/layer4"] == q[k] and sa["ranking"][0][k] == q[k]
    # cue-conflict: same-source neighbours are out, and the summary says so
    assert sa["knn_exclusion"] == SOURCE_EXCLUSION == q["knn_exclusion"]
    # the method, with the perplexity lowered for n=40 and why, in summary.json and the footer
    n = sa["n_samples"]
    assert n == 40 and sa["method"]["method"] == "t-SNE" and sa["method"]["backend"] in ("opentsne", "sklearn")
    assert sa["method"]["perplexity_note"] == "perplexity 30 → 13: n=40 needs perplexity < n/3"
    # files: labels.npy, the CSV's label/class, the dataset's label next to them
    textures = sa["labelings"]["texture"]["classes"]
    lab = np.load(a / "labels.npy")
    rows = _csv_rows(a / "embedding_layer4.csv")
    assert [textures[i] for i in lab] == [r["class"] for r in rows]
    assert all(r["path"].split("-")[1].startswith(r["class"]) for r in rows)  # the texture part
    assert all(r["path"].startswith(r["label:label"]) for r in rows)  # the folder (shape) label
    assert np.load(a / "dataset_labels.npy").shape == (n,)

    # the same features, labelled by texture through task.labels (and the stimulus paths)
    run_inprocess([*common, f"task.features={a / 'features' / 'layer4.npy'}", f"task.labels={a / 'labels.npy'}",
                   f"task.paths={a / 'paths.txt'}"], b)
    sb = json.loads((b / "summary.json").read_text())
    qb = sb["layers"]["layer4"]["quality"]
    assert qb["knn_exclusion"] == SOURCE_EXCLUSION
    for key in ("knn_feat@10", "knn_feat@20", "knn_2d@10", "knn_2d@20", "trustworthiness"):
        assert qb[key] == pytest.approx(q[key], abs=1e-9), key
    assert sb["method"]["text"] == sa["method"]["text"]


def test_replot_and_interactive_use_the_csv_classes(tmp_path):
    """The report and task.replot read the labeling's classes from the CSV, not the dataset's."""
    x = np.zeros((4, 2), np.float32)
    names = ["circle/circle1-square1.png", "circle/circle2-square2.png", "square/square1-circle1.png",
             "square/square2-circle2.png"]
    colour, others = resolve_labelings(parse_labeling_specs("texture", []), names, np.array([0, 0, 1, 1]),
                                       ["circle", "square"])
    codes, classes = colour.categorical()
    write_layer_map(tmp_path, "l", x, codes, names, classes, others)
    xy, lab, cls = read_layer_map(tmp_path, "l")
    assert cls == ["circle", "square"] and lab.tolist() == [1, 1, 0, 0]  # textures, not shapes
    assert [r["label:label"] for r in _csv_rows(tmp_path / "embedding_l.csv")] == ["circle"] * 2 + ["square"] * 2
