"""What the data pipeline feeds the model: all views side by side, masks overlaid (task=browse)."""
