"""Reports people open and share: ``report.html`` per run (tables, figures, provenance,
config, interactive embeddings), the sweep summary, the run config in every logger and the
Embedding Atlas export. Reads run directories only, so everything can be rebuilt later."""
