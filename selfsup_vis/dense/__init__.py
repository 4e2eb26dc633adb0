"""What each patch encodes: PCA->RGB maps with foreground, patch similarity and matching, token
norms and register artefacts, on any layer with a spatial grid (``task=dense``)."""
