"""The model server: ``create_app(config)`` builds the Flask app; ``service.serve`` runs it under gunicorn.

This module stays import-light on purpose: the gunicorn master imports it, and torch, transformers
and mlflow are loaded only in the workers, by create_app.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any


def _installed_version() -> str:
    """The version of whichever distribution installed this package: continual (training and serving) or
    continual-serve (the server alone)."""
    for distribution in ("continual", "continual-serve"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "0+unknown"  # running from a source tree that was never installed


__version__ = _installed_version()


def create_app(config: dict[str, Any] | None = None):
    """A Flask app serving the configured model; see service.config.ServiceConfig for the keys."""
    from service.app import build_app

    return build_app(config)


__all__ = ["create_app", "__version__"]
