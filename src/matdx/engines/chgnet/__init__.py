"""CHGNet engine (pretrained universal machine-learned potential)."""
