"""Lightning callbacks: reconstructions, embedding snapshots and feature health during training."""
