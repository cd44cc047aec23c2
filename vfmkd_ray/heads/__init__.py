"""Task heads: one package per registered type; ``heads.registry`` builds them by name."""
