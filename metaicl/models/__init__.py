"""Models built from `transformers` configs (never downloaded)."""
