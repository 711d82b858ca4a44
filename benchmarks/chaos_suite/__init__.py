"""The sections of benchmarks/chaos.py, one module each, and what they share (common.py). docs/benchmarks.md,
"Chaos", has the figures."""
