"""selfsup_vis: look inside self-supervised vision models (Hydra + PyTorch Lightning + timm)."""

__version__ = "0.1.0"
