"""GPU paths (bf16 autocast, channels_last, trainer=gpu); skipped explicitly without CUDA."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup_vis.models import build_model
from tests.conftest import assert_ok, compose_cfg, run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("model_name,layer", [("mocov2_tiny", "layer4"), ("mae_tiny", "norm")])
def test_bf16_and_channels_last_features_match_fp32(model_name, layer):
    model = build_model(compose_cfg([f"model={model_name}"]).model).cuda().eval()
    x = torch.randn(16, 3, 64, 64, device="cuda")
    with torch.no_grad():
        ref = model.extract_features(x, [layer])[layer].float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model.extract_features(x, [layer])[layer].float()
        cl = model.to(memory_format=torch.channels_last).extract_features(
            x.contiguous(memory_format=torch.channels_last), [layer]
        )[layer].float()
    assert torch.nn.functional.cosine_similarity(ref, bf16).min() > 0.99
    torch.testing.assert_close(cl, ref, atol=1e-3, rtol=1e-3)


def test_tsne_and_pretrain_on_gpu(tmp_path):
    env = {"SELFSUP_VIS_CACHE": str(tmp_path / "cache")}
    proc = run_cli(["task=tsne", "model=mocov2_tiny", "trainer=gpu", "task.max_samples_per_class=8",
                    f"hydra.run.dir={tmp_path / 'tsne'}"], tmp_path, env=env)
    assert_ok(proc)
    assert json.loads((tmp_path / "tsne" / "summary.json").read_text())["n_samples"] == 64
    proc = run_cli(["task=pretrain", "model=mae_tiny", "trainer=gpu", "trainer.max_steps=5",
                    "callbacks=none", f"hydra.run.dir={tmp_path / 'pre'}"], tmp_path, env=env)
    assert_ok(proc)
