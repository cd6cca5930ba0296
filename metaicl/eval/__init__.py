"""Evaluation: ICL vs in-weights learning on held-out sequence sets."""
