"""The yolc head."""
