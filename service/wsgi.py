"""WSGI entry point for gunicorn and other WSGI servers: ``gunicorn service.wsgi:app``.

Configured by environment only (CONTINUAL_MODEL_URI or CONTINUAL_REGISTERED_MODEL, MLFLOW_TRACKING_URI,
CONTINUAL_ADMIN_TOKEN, ...; see service.config). Importing this module loads the model.
"""
from service import create_app

app = create_app()
