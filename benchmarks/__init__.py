"""Benchmarks (not tests), run as modules, e.g. `python -m benchmarks.layer_speed`."""
