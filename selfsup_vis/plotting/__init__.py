"""Figures (matplotlib, Agg, Figure objects) and one adapter that sends them to every logger."""
