"""Feature extraction in chunks: a job stopped part way (time limit, preemption) and started
again in the same work dir extracts only the chunks it had not finished, and the features are
the same as one uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl

from selfsup_vis.data.datamodule import SyntheticDataModule
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.features.extraction import FeatureShardWriter, extract_features
from selfsup_vis.models import build_model
from tests.conftest import compose_cfg


class StopAfter(pl.Callback):
    """Stands in for SIGTERM: raises once ``limit`` predict batches have run."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, 0

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.seen >= self.limit:
            raise RuntimeError("job stopped")
        self.seen += 1


class CountSamples(pl.Callback):
    def __init__(self) -> None:
        self.samples = 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.samples += len(batch["index"])


def _trainer(*callbacks: pl.Callback) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, callbacks=list(callbacks))


def _setup(model_cfg):
    dm = SyntheticDataModule(samples_per_class=4, batch_size=4, eval_split="train")
    n = len(dm.dataset("train"))
    dm.configure(eval=pipeline_for_model(model_cfg, "eval", crop_pct=None), predict_indices=range(n))
    return dm, np.arange(n)


@pytest.mark.slow
def test_stopped_extraction_resumes_from_its_completed_chunks(tmp_path):
    cfg = compose_cfg(["model=mocov2_tiny"])
    model = build_model(cfg.model).eval()
    layers = ["layer4", "neck"]
    dm, indices = _setup(cfg.model)  # 32 samples: 4 chunks of 8

    writer = FeatureShardWriter(tmp_path / "ref_work", indices)
    ref = extract_features(_trainer(writer), model, dm, writer, layers, tmp_path / "ref", chunk_size=8)

    work = tmp_path / "work"
    writer = FeatureShardWriter(work, indices)
    with pytest.raises(RuntimeError, match="job stopped"):  # stopped in the third chunk (2 batches of 4 a chunk)
        extract_features(_trainer(writer, StopAfter(5)), model, dm, writer, layers, tmp_path / "out",
                         chunk_size=8)
    assert not (tmp_path / "out").exists()  # nothing half-written where the features go

    counter = CountSamples()
    writer = FeatureShardWriter(work, indices)
    paths = extract_features(_trainer(writer, counter), model, dm, writer, layers, tmp_path / "out",
                             chunk_size=8)
    assert counter.samples == 16  # chunks 0 and 1 were complete: only chunks 2 and 3 ran again
    for layer in layers:
        np.testing.assert_array_equal(np.load(paths[layer]), np.load(ref[layer]))
    assert not work.exists()

    # another extraction (other layers) in the same work dir does not reuse those chunks
    counter = CountSamples()
    writer = FeatureShardWriter(work, indices)
    extract_features(_trainer(writer, counter), model, dm, writer, ["layer3"], tmp_path / "out3", chunk_size=8)
    assert counter.samples == 32
