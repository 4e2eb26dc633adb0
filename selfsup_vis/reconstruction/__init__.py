"""What a masked-image model fills in: masks via the model, reconstruction of a batch, the arrays and the four-panel figures (shared by task=reconstruct and ReconstructionDump)."""
