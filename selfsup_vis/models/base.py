"""Shared LightningModule plumbing: named feature extraction (layers, pooling and final norm
fixed at construction and validated there), predict_step, checkpoint loading with a report, and
the optimizer / schedule / gradient clipping of the model's pre-training recipe."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn

from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.checkpoints.loading import LoadReport, load_checkpoint
from selfsup_vis.config.schemas import Pooling
from selfsup_vis.models.backbones import named_intermediates, resize_vit_pos_embed
from selfsup_vis.models.optim import effective_batch_size, param_groups, run_length, scaled_lr

log = logging.getLogger(__name__)

TOKEN_POOLINGS = tuple(p.value for p in Pooling if p.value != "reg")  # reg: register models only
#: ``predict_layers=["all"]``: every layer of ``available_layers()`` (a caller cannot list them
#: before the model is built, and must not reconfigure a model it did not build)
ALL_LAYERS = "all"
#: constructor arguments that are factories, not hyper-parameters (kept out of checkpoints)
NOT_HPARAMS = ("optimizer", "scheduler")


def _factory(node: Any) -> Callable[..., Any] | None:
    """A ``_partial_`` config node (dict) -> its callable; callables pass through."""
    if node is None or callable(node):
        return node
    return instantiate(dict(node), _convert_="all")


class SSLModule(pl.LightningModule):
    """Base of every selfsup_vis model. A family is a subclass decorated with
    ``@takes_schema(<its schema>)`` (its constructor has no defaults; the schema has them);
    it implements ``_layer_outputs`` (raw outputs of the requested base layers),
    ``available_layers`` and ``key_maps``, and ends its ``__init__`` with
    ``self.configure_features()`` (validates layers / pooling / final norm)."""

    #: state-dict prefixes that a checkpoint must provide (missing ones are an error)
    required_prefixes: tuple[str, ...] = ("",)
    #: layers whose outputs are token sequences (B, N, C) and accept a pooling suffix
    token_layers: frozenset[str] = frozenset()
    #: the config schema (config/model.py) whose defaults the constructor takes (``@takes_schema``)
    schema: ClassVar[type]
    #: mmpretrain / MMSelfSup ``model.type`` names this class reads (``kwargs_from_mm``)
    mm_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, name: str = "model", img_size: int, mean: Sequence[float], std: Sequence[float],
                 checkpoint: str | None, pipeline: str, strict: bool, allow_random_parts: bool,
                 pooling: str | None, predict_layers: Sequence[str] | None,
                 final_norm_blocks: bool, optimizer: Any, scheduler: Any, lr_base_batch: int | None,
                 no_weight_decay: Sequence[str] | None, weight_decay_exclude_1d: bool,
                 gradient_clip_val: float | None) -> None:
        super().__init__()
        self.model_name = name
        self.img_size = int(img_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.checkpoint = checkpoint
        self.pipeline = str(pipeline)
        self.strict = strict
        # a load option the tasks read (checkpoints.provenance.check_random_parts)
        self.allow_random_parts = bool(allow_random_parts)
        # requested here, validated by configure_features() once the subclass built its layers
        self.pooling: str | None = str(pooling) if pooling is not None else None
        self.predict_layers = list(predict_layers) if predict_layers else None
        self.final_norm_blocks = bool(final_norm_blocks)
        self.optimizer_factory = _factory(optimizer)
        self.scheduler_factory = _factory(scheduler)
        self.lr_base_batch = lr_base_batch
        self.no_weight_decay = list(no_weight_decay or [])
        self.weight_decay_exclude_1d = bool(weight_decay_exclude_1d)
        self.gradient_clip_val = gradient_clip_val
        self.optim_summary: dict[str, Any] = {}
        self.load_report: LoadReport | None = None

    # ----------------------------------------------------------------------------- family
    @classmethod
    def kwargs_from_mm(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from an mmpretrain / MMSelfSup ``model=dict(type=...)`` whose
        ``type`` is one of the class's ``mm_types`` (see :mod:`selfsup_vis.models.mmconfig`)."""
        raise NotImplementedError(f"{cls.__name__} reads no mmpretrain config")

    # ----------------------------------------------------------------------------- layers
    def available_layers(self) -> list[str]:
        raise NotImplementedError

    def default_layers(self) -> list[str]:
        return [self.available_layers()[-1]]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def valid_poolings(self) -> tuple[str, ...]:
        """Token layers take every pooling; models with feature maps only take ``gap``."""
        return TOKEN_POOLINGS if self.token_layers else ("gap",)

    def configure_features(self, layers: Sequence[str] | None = None, pooling: str | None = None,
                           final_norm: bool | None = None) -> None:
        """Validate and set what ``predict_step`` returns: ``layers`` (default: the
        constructor's ``predict_layers``, else ``default_layers()``), ``pooling`` of token
        layers without a suffix and ``final_norm`` on ViT block outputs. Called at the end of
        every constructor; an unknown layer, a pooling the model cannot do or a final norm it
        does not have is an error naming the valid choices."""
        layers = list(layers) if layers else self.predict_layers
        pooling = pooling if pooling is not None else self.pooling
        final_norm = self.final_norm_blocks if final_norm is None else bool(final_norm)
        valid = self.valid_poolings()
        if pooling is not None and str(pooling) not in valid:
            kind = "token layers" if self.token_layers else "feature maps only (no tokens)"
            raise ValueError(f"pooling={str(pooling)!r}: {type(self).__name__} '{self.model_name}' has "
                             f"{kind}; valid poolings: {', '.join(valid)}")
        resolved = list(layers) if layers else self.default_layers()
        if resolved == [ALL_LAYERS]:  # every layer, known only once the model is built
            resolved = self.available_layers()
        for layer in resolved:
            self.parse_layer(layer)
        if final_norm and self.final_norm_layer() is None:
            raise ValueError(f"final_norm: {type(self).__name__} '{self.model_name}' has no final norm "
                             f"to apply to block outputs")
        self.pooling = str(pooling) if pooling is not None else valid[0]
        self.predict_layers = resolved
        self.final_norm_blocks = final_norm

    def parse_layer(self, layer: str) -> tuple[str, str | None]:
        """``base[.pooling]`` -> (base, pooling); an unknown name lists the valid ones."""
        valid = self.available_layers()
        base, _, pool = layer.partition(".")
        if base not in valid or (pool and (base not in self.token_layers or pool not in TOKEN_POOLINGS)):
            suffix = (f"; token layers ({', '.join(sorted(self.token_layers))}) also take a "
                      f"pooling suffix .cls/.mean/.cls+mean/.gap") if self.token_layers else ""
            raise ValueError(f"unknown layer {layer!r} for {type(self).__name__} "
                             f"'{self.model_name}'; valid layers: {', '.join(valid)}{suffix}")
        return base, (pool or None)

    @torch.no_grad()
    def extract_features(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pooled (B, D) feature vectors per requested layer name (see ``available_layers``)."""
        if isinstance(layers, str):
            layers = [layers]
        parsed = {layer: self.parse_layer(layer) for layer in layers}
        raw = self._layer_outputs(images, {b for b, _ in parsed.values()})
        out = {}
        for layer, (base, pool) in parsed.items():
            x = raw[base]
            if self.final_norm_blocks and base.startswith("block"):
                x = self.final_norm_layer()(x)
            out[layer] = self._pool(x, base, pool)
        return out

    def final_norm_layer(self) -> nn.Module | None:
        """The final norm of a ViT encoder (None for backbones without one)."""
        return None

    def _pool(self, x: torch.Tensor, base: str, pool: str | None) -> torch.Tensor:
        if x.dim() == 2:
            return x
        if x.dim() == 4:  # NCHW feature map
            return x.mean(dim=(2, 3))
        pool = pool or self.pooling or "cls"
        n_prefix = getattr(self, "num_prefix_tokens", 1)
        cls, patches = x[:, 0], x[:, n_prefix:].mean(dim=1)
        if pool == "cls":
            return cls
        if pool in ("mean", "gap"):
            return patches
        return torch.cat([cls, patches], dim=1)

    def on_predict_start(self) -> None:
        """Channels-last on CUDA: cuDNN's NHWC convolutions (ResNet-50 bf16 on an H200: 15,400
        vs 10,300 img/s, issue 23); bf16 autocast comes from the trainer's precision."""
        if self.device.type == "cuda":
            self.to(memory_format=torch.channels_last)

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        return self.predict_features(batch, self.predict_layers or self.default_layers())

    def predict_features(self, batch: dict, layers: Sequence[str]) -> dict:
        """``predict_step``'s output for any ``layers`` (the extraction asks for the layers a
        cache still misses without reconfiguring the model)."""
        image = batch["image"]
        if image.is_cuda and image.ndim == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        feats = self.extract_features(image, layers)
        return {"features": feats, "labels": batch.get("label"), "index": batch.get("index")}

    # ----------------------------------------------------------------------------- weights
    def key_maps(self) -> list[KeyMap]:
        raise NotImplementedError

    def resize_tensor(self, key: str, tensor: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
        """Adapt a checkpoint tensor whose shape differs (pos-embed, rel-pos tables)."""
        return None

    def load_weights(self, checkpoint: str | Any | None = None, strict: bool | None = None) -> LoadReport:
        checkpoint = checkpoint if checkpoint is not None else self.checkpoint
        if checkpoint is None:
            raise ValueError("no checkpoint given")
        report = load_checkpoint(self, checkpoint, self.key_maps(), required=self.required_prefixes,
                                 strict=self.strict if strict is None else strict,
                                 resize=self.resize_tensor)
        self.load_report = report
        return report

    # ----------------------------------------------------------------------------- optim
    def no_weight_decay_names(self) -> set[str]:
        """Full names of the parameters named (by suffix) in ``no_weight_decay``."""
        sfx = tuple(self.no_weight_decay)
        return {n for n, _ in self.named_parameters() if sfx and (n in sfx or n.endswith(tuple("." + s for s in sfx)))}

    def configure_optimizers(self) -> Any:
        """The recipe's optimizer at lr x effective batch / ``lr_base_batch``, timm's weight-decay
        groups, and the schedule fitted to this run (steps, epochs or time)."""
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__} '{self.model_name}': model.optimizer is null")
        run = run_length(self.trainer)  # estimated_stepping_batches: loads the train loader
        batch = effective_batch_size(self.trainer)
        kw = getattr(self.optimizer_factory, "keywords", {})
        if "lr" not in kw:
            raise ValueError("model.optimizer needs an lr")
        lr = scaled_lr(kw["lr"], self.lr_base_batch, batch)
        groups = param_groups(self, float(kw.get("weight_decay", 0.0)), self.no_weight_decay_names(),
                              self.weight_decay_exclude_1d)
        opt = self.optimizer_factory(params=groups, lr=lr)
        self.optim_summary = {
            "optimizer": type(opt).__name__, "base_lr": float(kw["lr"]), "lr_base_batch": self.lr_base_batch,
            "effective_batch": batch, "lr": lr, "gradient_clip_val": self.gradient_clip_val,
            "total_steps": run.total_steps, "max_seconds": run.max_seconds,
            "param_groups": [{"params": len(g["params"]), "weight_decay": g.get("weight_decay")} for g in groups],
        }
        if self.lr_base_batch:
            log.info("%s: lr %.4g = %.4g x effective batch %s / %d (loader batch x devices x nodes x "
                     "accumulation)", type(opt).__name__, lr, kw["lr"], batch, self.lr_base_batch)
        else:
            log.info("%s: lr %.4g (absolute: model.lr_base_batch is null)", type(opt).__name__, lr)
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt, run)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """The recipe's max-norm clipping (``model.gradient_clip_val``) unless the Trainer's
        ``gradient_clip_val`` is set, which wins."""
        clip = gradient_clip_val if gradient_clip_val is not None else self.gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=float(clip),
                                gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    def log_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        for k, v in losses.items():
            self.log(f"train/{k}", v, prog_bar=(k == "loss"), batch_size=batch_size, sync_dist=True)

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Model-normalised images -> 0..1 display range with this model's own mean/std."""
        m = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        return (images * s + m).clamp(0, 1)


class ViTEncoderFeatures:
    """Layers of a timm ViT ``self.encoder`` (blocks + final norm) for MAE and MaskFeat."""

    encoder: nn.Module

    def final_norm_layer(self) -> nn.Module | None:
        return self.encoder.norm

    def available_layers(self) -> list[str]:
        return [f"block{i}" for i in range(len(self.encoder.blocks))] + ["norm"]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        final, outs = named_intermediates(self.encoder, images, layers, need_final="norm" in layers)
        outs["norm"] = final
        return outs

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Un-masked encoder tokens (B, 1+L, C) after the final norm (mmpretrain extract_feat)."""
        return self.encoder.forward_features(images)

    def resize_tensor(self, key: str, tensor: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
        if key.endswith("pos_embed"):
            return resize_vit_pos_embed(tensor, ref)
        return None


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
