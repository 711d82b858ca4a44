"""The model server: ``create_app(config)`` builds the Flask app; ``service.serve`` runs it under gunicorn.

This module stays import-light on purpose: the gunicorn master imports it, and torch, transformers
and mlflow are loaded only in the workers, by create_app.
"""
from __future__ import annotations

from typing import Any

from service.version import __version__


def create_app(config: dict[str, Any] | None = None):
    """A Flask app serving the configured model; see service.config.ServiceConfig for the keys."""
    from service.app import build_app

    return build_app(config)


__all__ = ["__version__", "create_app"]
