"""Per-layer feature extraction with Trainer.predict: streamed shards, DDP-exact merge, cache."""
