"""Datasets (synthetic, folders, ImageNet, cue-conflict), pipelines, masks and DataModules."""
