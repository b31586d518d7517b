"""Run directory to predictions: the inference `Policy` and offline evaluation on held-out data."""
