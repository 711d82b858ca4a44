"""continual: a text classifier that keeps learning from versioned arrivals without forgetting.

Packages, lowest layer first (a module imports only its own package or a lower one, and may import
``service``; tests/test_layers.py keeps it so): params and progress, workspace, arrivals, reports, model,
strategies, rounds, registry, cli.
"""
