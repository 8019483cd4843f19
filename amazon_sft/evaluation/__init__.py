"""Score held-out and seen titles before and after tuning: generation, metrics, reports."""
