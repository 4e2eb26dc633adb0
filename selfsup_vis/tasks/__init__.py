"""Task functions: each ``run(cfg) -> dict`` reads top to bottom: config → data → model → outputs."""
