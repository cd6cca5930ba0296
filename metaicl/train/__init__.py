"""Training: a plain torch loop (loop.py) and one thin Ray Train adapter (ray_train.py)."""
