"""Training throughput of our MAE step vs bare PyTorch/timm on the same batch, side by side.

ours:     selfsup_vis MAE LightningModule through ``Trainer.fit`` as task=pretrain runs it
          (training_step + loss logging, AdamW + warmup/cosine scheduler, TrainingStats and
          LearningRateMonitor callbacks, CSV logger), fed a pre-collated in-memory batch.
bare-mae: the same MAE computation written directly on timm modules (a timm ViT encoder on
          the visible patches, timm Blocks as decoder, norm-pix MSE), loss.backward(),
          AdamW.step() in a plain loop: what the step costs without any of our machinery.
bare-vit: a plain timm ViT (same encoder size) forward on all tokens + backward + step, for
          reference only (it does different work: no masking, no decoder).

The pipeline overhead is ours vs bare-mae. Rounds are interleaved; the ratio uses each
method's best round (the least disturbed one on a shared machine), the median is shown too. Image decoding / augmentation is excluded from both.

    python scripts/bench_pretrain.py                       # mae_tiny on CPU
    python scripts/bench_pretrain.py --model mae_vit-b16 --batch-size 8 --steps 5
    python scripts/bench_pretrain.py --model mae_vit-b16 --device cuda --precision bf16 --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_cfg(model: str):
    from selfsup_vis.config import compose

    return compose([f"model={model}"]).model


# ----------------------------------------------------------------------------- bare MAE
class BareMAE(nn.Module):
    """MAE written straight on timm: encoder on visible patches, Block decoder, norm-pix MSE."""

    def __init__(self, c) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block, VisionTransformer

        self.p, self.ratio = c.patch_size, c.mask_ratio
        self.vit = VisionTransformer(img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.embed_dim,
                                     depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
                                     num_classes=0)
        L = (c.img_size // c.patch_size) ** 2
        self.dec_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.dec_pos = nn.Parameter(torch.zeros(1, L + 1, c.decoder_embed_dim), requires_grad=False)
        self.dec_blocks = nn.ModuleList(Block(c.decoder_embed_dim, c.decoder_num_heads, c.decoder_mlp_ratio,
                                              qkv_bias=True) for _ in range(c.decoder_depth))
        self.dec_norm = nn.LayerNorm(c.decoder_embed_dim)
        self.pred = nn.Linear(c.decoder_embed_dim, c.patch_size**2 * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        t = v.patch_embed(x) + v.pos_embed[:, 1:]
        B, L, D = t.shape
        keep = int(L * (1 - self.ratio))
        ids = torch.argsort(torch.rand(B, L, device=x.device), dim=1)
        restore = torch.argsort(ids, dim=1)
        t = torch.gather(t, 1, ids[:, :keep, None].expand(-1, -1, D))
        t = torch.cat([(v.cls_token + v.pos_embed[:, :1]).expand(B, -1, -1), t], 1)
        t = v.norm(v.blocks(t))
        d = self.dec_embed(t)
        rest = torch.cat([d[:, 1:], self.mask_token.expand(B, L - keep, -1)], 1)
        rest = torch.gather(rest, 1, restore[..., None].expand(-1, -1, d.shape[-1]))
        d = torch.cat([d[:, :1], rest], 1) + self.dec_pos
        for blk in self.dec_blocks:
            d = blk(d)
        pred = self.pred(self.dec_norm(d))[:, 1:]
        mask = torch.ones(B, L, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        h = x.shape[-1] // self.p
        tgt = x.reshape(B, 3, h, self.p, h, self.p).permute(0, 2, 4, 3, 5, 1).reshape(B, L, -1)
        tgt = (tgt - tgt.mean(-1, keepdim=True)) / (tgt.var(-1, keepdim=True) + 1e-6) ** 0.5
        return ((((pred - tgt) ** 2).mean(-1)) * mask).sum() / mask.sum()


class BareViT(nn.Module):
    def __init__(self, c) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.embed_dim,
                                     depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
                                     num_classes=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x).float().pow(2).mean()


def bench_bare(module: nn.Module, x: torch.Tensor, steps: int, warmup: int, bf16: bool) -> float:
    """img/s of forward + backward + AdamW step in a plain loop."""
    device = x.device
    module.to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return steps * x.shape[0] / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- ours
def bench_ours(model_cfg, x: torch.Tensor, steps: int, warmup: int, bf16: bool) -> float:
    """img/s of our LightningModule through Trainer.fit with task=pretrain's callbacks."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    from selfsup_vis.callbacks import TrainingStats
    from selfsup_vis.models import build_model

    model = build_model(model_cfg, load=False)
    batch = {"image": x.cpu(), "label": torch.zeros(x.shape[0], dtype=torch.long),
             "index": torch.arange(x.shape[0])}
    marks: dict[str, float] = {}
    device = x.device

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, b, batch_idx):
            if trainer.global_step == warmup:
                _sync(device)
                marks["start"] = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            _sync(device)
            marks["end"] = time.perf_counter()

    loader = torch.utils.data.DataLoader([batch] * (warmup + steps), batch_size=None)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
            precision="bf16-mixed" if bf16 else "32-true", max_steps=warmup + steps,
            logger=CSVLogger(tmp, name="bench"), log_every_n_steps=10,
            callbacks=[TrainingStats(), LearningRateMonitor(logging_interval="step"), Timer()],
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp)
        trainer.fit(model, train_dataloaders=loader)
    return steps * x.shape[0] / (marks["end"] - marks["start"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mae_tiny", help="an MAE model config (conf/model/<name>.yaml)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="32", choices=["32", "bf16"])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    args = ap.parse_args()

    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("selfsup_vis").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = args.precision == "bf16"
    cfg = build_cfg(args.model)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, cfg.img_size, cfg.img_size, device=device)
    results: dict[str, list[float]] = {"ours": [], "bare-mae": [], "bare-vit": []}
    for r in range(args.rounds):
        results["bare-mae"].append(bench_bare(BareMAE(cfg), x, args.steps, args.warmup, bf16))
        results["ours"].append(bench_ours(cfg, x, args.steps, args.warmup, bf16))
        results["bare-vit"].append(bench_bare(BareViT(cfg), x, args.steps, args.warmup, bf16))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.1f} img/s" for k, v in results.items()), flush=True)
    best = {k: max(v) for k, v in results.items()}
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{args.model} batch {args.batch_size} {cfg.img_size}px on {args.device} "
          f"({args.precision}, {args.threads} threads), {args.rounds} rounds x {args.steps} steps")
    print(f"{'':<10}{'best img/s':>12}{'median':>10}")
    for k in ("ours", "bare-mae", "bare-vit"):
        print(f"{k:<10}{best[k]:>12.1f}{med[k]:>10.1f}")
    ratio = best["ours"] / best["bare-mae"]
    print(f"\nours / bare-mae throughput ratio: {ratio:.3f}  (pipeline overhead {100 * (1 / ratio - 1):+.1f} %)")
    print(f"ours / bare-vit (full-token ViT, reference): {best['ours'] / best['bare-vit']:.3f}")


if __name__ == "__main__":
    main()
