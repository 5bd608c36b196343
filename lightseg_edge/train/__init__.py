"""Losses, metrics and the trainer. ``metrics`` needs only numpy; the rest needs torch."""
