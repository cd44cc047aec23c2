"""The sam_mask head."""
