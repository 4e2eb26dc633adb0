"""Reports (issue 14): report.html opened in a real headless Chromium, the run config and
headline numbers read back from the W&B and TensorBoard files, the Embedding Atlas parquet,
and the sweep summary of a real 2×2 multirun with one failing job."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from selfsup_vis.report.headline import headline_metrics
from selfsup_vis.report.html import build_run_report
from selfsup_vis.report.sweep import collect_jobs, summarize_sweep
from selfsup_vis.tasks.common import run_task
from tests.conftest import compose_cfg, run_main
from tests.logreaders import tensorboard_hparams, wandb_config, wandb_history, wandb_summary

LAYERS = ["layer2", "neck"]
N_CLASSES, PER_CLASS = 8, 6
N = N_CLASSES * PER_CLASS


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if exe := shutil.which(name):
            return exe
    pytest.skip("Chromium not found: install Debian's chromium (apt-get install -y chromium; "
                ".ci/run does this before make test)")


def chromium_args(profile: Path) -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
            f"--user-data-dir={profile}", "--window-size=1280,1600"]


def dump_dom(page: Path, profile: Path, budget_ms: int = 8000) -> str:
    proc = subprocess.run([*chromium_args(profile), f"--virtual-time-budget={budget_ms}", "--dump-dom",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(page: Path, profile: Path, out: Path, budget_ms: int = 8000) -> np.ndarray:
    proc = subprocess.run([*chromium_args(profile), f"--virtual-time-budget={budget_ms}", f"--screenshot={out}",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB"), dtype=np.float32)


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out): no
    network port, no extra package."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen([*chromium_args(profile), "--remote-debugging-pipe", "about:blank"],
                                     preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id, self.session = b"", 0, None

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, reply["error"]
                    return reply["result"]
            chunk = os.read(self._r, 1 << 16)
            assert chunk, "chromium closed the DevTools pipe"
            self._buf += chunk
        raise TimeoutError(method)

    def open(self, page: Path) -> None:
        target = self.send("Target.createTarget", {"url": page.resolve().as_uri()})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def eval(self, expr: str):
        res = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    def mouse(self, kind: str, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)


RENDERERS_JS = """JSON.stringify([...Bokeh.index.all_views()].filter(v => v.model.type === 'GlyphRenderer')
  .map(v => [v.parent.model.name, v.model.name, v.glyph.sx ? v.glyph.sx.length : -1, v.model.visible]))"""


# ---------------------------------------------------------------------------------------------
# one real tsne run (in-process, all three loggers, Atlas export) shared by the tests below
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tsne_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tsne_report")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    cache = os.environ.get("SELFSUP_VIS_CACHE")
    os.environ["SELFSUP_VIS_CACHE"] = str(out / "cache")
    try:
        cfg = compose_cfg(["task=tsne", "model=mocov2_tiny", f"task.max_samples_per_class={PER_CLASS}",
                           f"task.layers=[{','.join(LAYERS)}]", "task.backend=pca", "logger=many",
                           "task.export=[atlas]", "task.report_thumbnails=20", "task.atlas_neighbors=5",
                           "task.perplexity=7.5", f"hydra.run.dir={out / 'run'}"], out / "run")
        run_task(cfg)
    finally:
        GlobalHydra.instance().clear()
        if cache is None:
            os.environ.pop("SELFSUP_VIS_CACHE", None)
        else:
            os.environ["SELFSUP_VIS_CACHE"] = cache
    return out / "run"


@pytest.mark.slow
def test_report_html_is_self_contained(tsne_run: Path):
    html = (tsne_run / "report.html").read_text()
    assert 0.5e6 < len(html) < 20e6
    # nothing is fetched from anywhere: no external scripts, styles or images
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?://""", html)
    assert html.count("data:image/png;base64,") >= 3  # the figures are embedded
    for name in ("summary.json", "config_resolved.yaml", "embedding_neck.csv", "atlas.parquet"):
        assert f'href="{name}"' in html
    assert "RANDOM WEIGHTS" in html and "perplexity: 7.5" in html  # provenance, resolved config


@pytest.mark.browser
def test_tsne_report_in_chromium(tsne_run: Path, tmp_path: Path):
    page = tsne_run / "report.html"
    shot = screenshot(page, tmp_path / "profile", tmp_path / "shot.png")
    assert shot.std() > 20 and shot.shape[0] > 500, "blank screenshot"

    dom = dump_dom(page, tmp_path / "profile")
    assert dom.count('class="bk-Figure"') == len(LAYERS), "Bokeh did not render one figure per layer"
    summary_table = re.search(r'<table id="summary".*?</table>', dom, re.S)
    assert summary_table and ">n_samples<" in summary_table.group(0) and f">{N}<" in summary_table.group(0)
    headline = re.search(r'<table id="headline".*?</table>', dom, re.S).group(0)
    assert all(f">knn_feat@20/{la}<" in headline for la in LAYERS)

    chrome = DevTools(tmp_path / "profile2")
    try:
        start = time.time()
        chrome.open(page)
        ready = "typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0 && " \
                "[...Bokeh.index.all_views()].some(v => v.model.type === 'GlyphRenderer')"
        while not chrome.eval(ready):
            assert time.time() - start < 60, "the page did not render within 60 s"
            time.sleep(0.2)
        renderers = json.loads(chrome.eval(RENDERERS_JS))
        # one renderer per class and layer; every point drawn once per layer
        assert len(renderers) == len(LAYERS) * N_CLASSES
        for layer in LAYERS:
            drawn = [r for r in renderers if r[0] == f"embedding_{layer}"]
            assert len(drawn) == N_CLASSES and sum(r[2] for r in drawn) == N, drawn

        # hover the first point of the first layer: the tooltip shows its thumbnail and class
        x, y = chrome.eval("""(() => { const v = [...Bokeh.index.all_views()].find(v => v.model.type === 'GlyphRenderer');
            const r = v.parent.canvas_view.el.getBoundingClientRect(); return [r.left + v.glyph.sx[0], r.top + v.glyph.sy[0]] })()""")
        chrome.mouse("mouseMoved", x, y)
        tooltip_js = """JSON.stringify((() => { const out = {img: [], b: []}; const walk = root => {
            for (const el of root.querySelectorAll('*')) {
              if (el.tagName === 'IMG' && el.getBoundingClientRect().width > 0) out.img.push(el.src.slice(0, 22));
              if (el.tagName === 'B' && el.getBoundingClientRect().width > 0) out.b.push(el.textContent);
              if (el.shadowRoot) walk(el.shadowRoot); } }; walk(document); return out })())"""
        for _ in range(25):
            tip = json.loads(chrome.eval(tooltip_js))
            if tip["img"]:
                break
            time.sleep(0.2)
        classes = json.loads((tsne_run / "summary.json").read_text())["classes"]
        assert tip["img"] and tip["img"][0] == "data:image/png;base64,", tip
        assert set(tip["b"]) & set(classes), tip

        # click the first legend entry of the first layer: that class is hidden there only
        lx, ly = chrome.eval("""(() => { const v = [...Bokeh.index.all_views()].find(v => v.model.type === 'Legend');
            const r = v.parent.canvas_view.el.getBoundingClientRect(); const b = v.bbox;
            return [r.left + b.x + 10, r.top + b.y + b.height / v.model.items.length / 2 + 2] })()""")
        chrome.mouse("mouseMoved", lx, ly)
        chrome.mouse("mousePressed", lx, ly)
        chrome.mouse("mouseReleased", lx, ly)
        time.sleep(0.5)
        hidden = [r for r in json.loads(chrome.eval(RENDERERS_JS)) if not r[3]]
        assert hidden == [[f"embedding_{LAYERS[0]}", f"class:{classes[0]}", PER_CLASS, False]], hidden
    finally:
        chrome.close()


@pytest.mark.slow
def test_loggers_hold_the_config_and_the_headline_numbers(tsne_run: Path):
    summary = json.loads((tsne_run / "summary.json").read_text())
    headline = headline_metrics(summary)
    assert set(headline) >= {f"knn_feat@20/{la}" for la in LAYERS}

    config = wandb_config(tsne_run)
    assert config["task.perplexity"] == 7.5 and config["task.layers"] == LAYERS
    assert config["dataset.name"] == "synthetic" and config["model.name"] == "mocov2_tiny"
    assert config["provenance.checkpoint_sha256"] == "RANDOM" and config["provenance.n"] == N
    assert config["provenance.package_version"] and "provenance.git_commit" in config
    assert not any(k.startswith("logger.") for k in config)
    wb = wandb_summary(tsne_run)
    for key, value in headline.items():
        assert wb[key] == pytest.approx(value), key
    assert wb["run/succeeded"] == 1.0
    assert wandb_history(tsne_run)  # the scalars are still there

    hparams, metrics = tensorboard_hparams(tsne_run / "tensorboard")
    assert hparams["task.perplexity"] == 7.5 and hparams["provenance.model"] == "mocov2_tiny"
    assert hparams["task.backend"] == "pca" and hparams["provenance.split"] == "val"
    assert set(metrics) >= set(headline) | {"run/succeeded"}


@pytest.mark.slow
def test_atlas_parquet_columns_and_types(tsne_run: Path):
    table = pq.read_table(tsne_run / "atlas.parquet")
    schema = table.schema
    assert table.num_rows == N
    expected = {"id": pa.int64(), "path": pa.string(), "label": pa.int64(), "class": pa.string(),
                "image": pa.binary()}
    for la in LAYERS:
        expected[f"x_{la}"] = expected[f"y_{la}"] = pa.float32()
    for name, typ in expected.items():
        assert schema.field(name).type == typ, name
    neighbor_type = pa.struct([("ids", pa.list_(pa.int64())), ("distances", pa.list_(pa.float32()))])
    for name in ["neighbors", *(f"neighbors_{la}" for la in LAYERS)]:
        assert schema.field(name).type == neighbor_type, name

    df = pd_read(tsne_run / "atlas.parquet")
    rows = list(csv.DictReader(open(tsne_run / "embedding_neck.csv")))
    assert list(df["path"]) == [r["path"] for r in rows] and list(df["label"]) == [int(r["label"]) for r in rows]
    assert np.allclose(df["x_neck"], [float(r["x"]) for r in rows], atol=1e-4)
    img = Image.open(io.BytesIO(df["image"][0]))
    assert img.format == "PNG" and img.size == (48, 48)
    # neighbours: nearest by cosine distance in the layer's features, self excluded
    feats = np.load(tsne_run / "features" / "neck.npy").astype(np.float64)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    dist = 1 - unit @ unit.T
    np.fill_diagonal(dist, np.inf)
    for i in (0, N // 2, N - 1):
        nb = df["neighbors_neck"][i]
        assert len(nb["ids"]) == 5 and 0 <= min(nb["ids"]) and max(nb["ids"]) < N and i not in nb["ids"]
        assert np.allclose(nb["distances"], np.sort(dist[i])[:5], atol=1e-4)
        assert np.allclose(dist[i][nb["ids"]], nb["distances"], atol=1e-4)


def pd_read(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


@pytest.mark.slow
def test_report_size_budget_links_figures_instead(tsne_run: Path, tmp_path: Path):
    small = tmp_path / "run"
    shutil.copytree(tsne_run, small, ignore=shutil.ignore_patterns("wandb", "tensorboard", "csv", "cache"))
    full = len((small / "report.html").read_text())
    build_run_report(small, max_bytes=2_100_000)
    html = (small / "report.html").read_text()
    assert len(html) < full and "not embedded" in html and 'href="tsne_grid.png"' in html


# ---------------------------------------------------------------------------------------------
# a failed run still gets a report
# ---------------------------------------------------------------------------------------------
def test_failed_run_report_renders(tmp_path: Path):
    out = tmp_path / "failed"
    cfg = compose_cfg(["task=tsne", "model=mocov2_tiny", "task.layers=[layer9]", f"hydra.run.dir={out}"], out)
    try:
        with pytest.raises(Exception, match="layer9"):
            run_task(cfg)
    finally:
        GlobalHydra.instance().clear()
    html = (out / "report.html").read_text()
    assert 'id="run-status">failed<' in html and "layer9" in html
    if shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"):
        dom = dump_dom(out / "report.html", tmp_path / "profile", 3000)
        assert re.search(r'id="run-status">failed<', dom) and re.search(r'id="run-error">[^<]*layer9', dom)
        assert '<pre id="config">' in dom


# ---------------------------------------------------------------------------------------------
# sweeps
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_summary_of_a_2x2_sweep_with_a_failing_job(tmp_path: Path):
    """A real multirun (the eval pipeline has no GaussianBlur, so exactly one job fails): the
    Hydra callback writes the summary, and task=summarize rebuilds it."""
    sweep = tmp_path / "sweep"
    proc = run_main(["-m", "task=browse", "model=mocov2_tiny", "task.n_samples=2", "task.phase=train,val",
                    "task.skip_type=[],[GaussianBlur]", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode != 0  # a job failed
    assert f"sweep summary (3 done, 1 failed): {sweep / 'report.html'}" in proc.stdout + proc.stderr
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert len(rows) == 4
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["task.phase"] == "val" and failed[0]["task.skip_type"] == "[GaussianBlur]"
    assert failed[0]["error"].startswith("ValueError: skip_type: pipeline 'eval' has no step GaussianBlur")
    assert all(r["status"] == "done" and not r["error"] for r in rows if r is not failed[0])
    md = (sweep / "sweep_summary.md").read_text().splitlines()
    assert len(md) == 2 + 4 and sum("| failed |" in line for line in md) == 1

    # task=summarize over the same directory (in-process), written elsewhere
    out = tmp_path / "summary_out"
    cfg = compose_cfg(["task=summarize", f"task.sweep_dir={sweep}", f"task.output_dir={out}",
                       f"hydra.run.dir={tmp_path / 'summarize_run'}"], tmp_path / "summarize_run")
    try:
        run_task(cfg)
    finally:
        GlobalHydra.instance().clear()
    summary = json.loads((tmp_path / "summarize_run" / "summary.json").read_text())
    assert summary["n_jobs"] == 4 and summary["counts"] == {"done": 3, "failed": 1}
    html = (out / "report.html").read_text()
    assert html.count('<tr class="failed"') == 1 and html.count('<tr class="done"') == 3
    assert (tmp_path / "summarize_run" / "report.html").read_text().count("<tr class=") == 4
    if shutil.which("chromium"):
        dom = dump_dom(out / "report.html", tmp_path / "profile", 2000)
        table = re.search(r'<table id="sweep-table".*?</table>', dom, re.S).group(0)
        assert table.count("<tr class=") == 4 and "GaussianBlur" in table


def _fake_job(root: Path, n: int, overrides: list[str], summary: dict | None, status: dict | None = None) -> None:
    d = root / f"{n}_job"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    if status is not None:
        (d / "status.json").write_text(json.dumps(status))


def test_sweep_plots_across_swept_keys(tmp_path: Path):
    def tsne(knn: list[float]) -> dict:
        return {"task": "tsne", "layers": {la: {"quality": {"knn_feat@20": k, "knn_2d@20": k / 2, "trustworthiness": 0.9}}
                                           for la, k in zip(["layer2", "layer4", "neck"], knn)}}

    _fake_job(tmp_path, 0, ["task=tsne", "model.checkpoint=a.pth", "task.perplexity=10"], tsne([0.3, 0.5, 0.6]))
    _fake_job(tmp_path, 1, ["task=tsne", "model.checkpoint=b.pth", "task.perplexity=10"], tsne([0.4, 0.7, 0.8]))
    _fake_job(tmp_path, 2, ["task=tsne", "model.checkpoint=c.pth", "task.perplexity=10"], None,
              {"status": "failed", "error": "FileNotFoundError: c.pth", "overrides": []})
    _fake_job(tmp_path, 10, ["task=tsne", "model.checkpoint=d.pth", "task.perplexity=10"], None)
    jobs = collect_jobs(tmp_path)
    assert [j.job for j in jobs] == ["0_job", "1_job", "2_job", "10_job"]  # natural job order
    assert [j.status for j in jobs] == ["done", "done", "failed", "incomplete"]
    summary = summarize_sweep(tmp_path)
    assert summary["swept_keys"] == ["model.checkpoint"]
    names = sorted(Path(p).name for p in summary["figures"])
    assert names == ["sweep_knn_2d_at20_by_layer.png", "sweep_knn_feat_at20_by_layer.png",
                     "sweep_trustworthiness_by_layer.png"]
    rows = list(csv.DictReader(open(tmp_path / "sweep_summary.csv")))
    assert rows[1]["knn_feat@20/neck"] == "0.8" and rows[2]["error"] == "FileNotFoundError: c.pth"


def test_headline_numbers_of_each_task():
    assert headline_metrics({"task": "shape_bias", "shape_bias": 0.25}) == {"shape_bias": 0.25}
    assert headline_metrics({"task": "reconstruct", "mean_masked_error": 0.5}) == {"reconstruction_error": 0.5}
    pre = headline_metrics({"task": "pretrain", "final_metrics": {"train/loss": 1.5},
                            "reconstruction_error": [{"step": 1, "error": 0.9}, {"step": 2, "error": 0.7}]})
    assert pre == {"final_loss": 1.5, "reconstruction_error": 0.7}
    assert headline_metrics({"models": {"a": {"shape_bias": 0.1}, "humans": {"shape_bias": 0.9}}}) == \
        {"shape_bias/a": 0.1, "shape_bias/humans": 0.9}
    assert headline_metrics(None) == {} and headline_metrics({"task": "browse"}) == {}
    # a summary that names its headline is read as it is (typed summaries always do)
    assert headline_metrics({"headline": {"x/a": 0.5, "note": "text"}, "shape_bias": 0.3}) == {"x/a": 0.5}


def test_typed_summaries_serialise_to_the_same_keys_with_a_headline():
    """Every task's summary is a dataclass: the JSON keys are its fields (a None field that only
    some runs have is left out) plus ``headline``, the numbers the sweep tables read."""
    from selfsup_vis.report.summaries import (
        AttentionSummary,
        CompareSummary,
        PretrainSummary,
        SweepSummary,
    )

    q = {"knn_feat@20": 0.9, "knn_2d@20": 0.8, "trustworthiness": 0.95, "silhouette_2d": 0.1}
    compare = CompareSummary(
        dataset="synthetic", split="val", n_samples=10, classes=["a"], seed=0, space="cosine", metric="cosine",
        standardize=False, color_by="label", labelings={}, initialisation="shared pca", alignment="...",
        models=[{"name": "m1", "panel_layer": "norm"}, {"name": "pixels", "panel_layer": "pixels"}],
        quality={"m1": {"block1": {}, "norm": q}, "pixels": {"pixels": {**q, "knn_feat@20": float("nan")}}},
        procrustes_rms={}, cka={}, timings={}, files=[]).to_dict()
    assert list(compare)[:3] == ["dataset", "split", "n_samples"] and "headline" in compare
    assert headline_metrics(compare)["knn_feat@20/m1"] == 0.9 and len(headline_metrics(compare)) == 6
    assert np.isnan(headline_metrics(compare)["knn_feat@20/pixels"])  # NaN kept, visible
    attention = AttentionSummary(model="m", checkpoint=None, method="gradcam", images=[], images_file="",
                                 source={}, config={}, pointing_game="omitted",
                                 results={"gradcam@layer4": {"score": {"pointing_accuracy": 0.75,
                                                                       "energy_inside": 0.5}}})
    assert headline_metrics(attention.to_dict()) == {"pointing_accuracy/gradcam@layer4": 0.75,
                                                     "energy_inside/gradcam@layer4": 0.5}
    pre = PretrainSummary(model="m", algorithm="MAE", dataset="d", train_split="train", pipeline="p",
                          resumed_from=None, epochs=1, global_step=2, fit_seconds=1.0,
                          final_metrics={"train/loss": 1.5}, checkpoints={}, callbacks=[],
                          callback_failures=[], optim={}).to_dict()
    assert "reconstruction_error" not in pre and headline_metrics(pre) == {"final_loss": 1.5}
    sweep = SweepSummary(sweep_dir="s", n_jobs=3, counts={"done": 2, "failed": 1}, swept_keys=[], columns=[],
                         jobs=[], figures=[], files=[], created="", report="r")
    assert sweep.headline() == {"jobs": 3.0, "jobs_not_done": 1.0}


@pytest.mark.browser
@pytest.mark.slow
def test_10k_point_report_renders_in_seconds(tmp_path: Path):
    """Issue 14: a page with N = 10k points (two layers, 1000 thumbnails) stays small and
    renders quickly (measured inside the page, browser start-up excluded)."""
    rng = np.random.default_rng(0)
    n, classes = 10_000, [f"class{i}" for i in range(20)]
    labels = rng.integers(0, len(classes), n)
    layers = {"layer3": rng.normal(size=(n, 2)), "neck": rng.normal(size=(n, 2)) + labels[:, None]}
    for layer, xy in layers.items():
        with open(tmp_path / f"embedding_{layer}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "class", "x", "y"])
            w.writerows([f"img/{i:05d}.png", lab, classes[lab], f"{x:.6g}", f"{y:.6g}"]
                        for i, (lab, (x, y)) in enumerate(zip(labels, xy)))
    (tmp_path / "summary.json").write_text(json.dumps(
        {"task": "tsne", "model": "m", "classes": classes, "n_samples": n,
         "layers": {la: {"quality": {"knn_feat@20": 0.5}} for la in layers}}))
    rows = np.sort(rng.choice(n, 1000, replace=False))
    np.savez_compressed(tmp_path / "thumbnails.npz", rows=rows,
                        images=rng.integers(0, 255, (1000, 48, 48, 3), dtype=np.uint8))
    page = build_run_report(tmp_path)
    assert page.stat().st_size < 20e6

    chrome = DevTools(tmp_path / "profile")
    try:
        chrome.open(page)
        start = time.time()
        ready = "typeof Bokeh !== 'undefined' && [...Bokeh.index.all_views()].filter(v => " \
                "v.model.type === 'GlyphRenderer' && v.glyph.sx && v.glyph.sx.length).length"
        while chrome.eval(ready) != len(layers) * len(classes):
            assert time.time() - start < 60, "not rendered within 60 s"
            time.sleep(0.1)
        rendered_ms = chrome.eval("performance.now()")
        drawn = json.loads(chrome.eval(RENDERERS_JS))
        assert sum(r[2] for r in drawn) == n * len(layers)
    finally:
        chrome.close()
    print(f"10k points: {page.stat().st_size / 1e6:.1f} MB, rendered {rendered_ms / 1000:.1f} s after navigation")
    assert rendered_ms < 15_000  # a few seconds on a desktop; generous for a loaded 2-core CI box
