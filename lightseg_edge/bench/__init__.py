"""Latency, memory, parameter and accuracy measurement, and the papers' claims checked against them."""
