"""Builds the app: config, metrics, the streams (one per served model; first load), the batcher, blueprints."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from flask import Flask, request

from service.api import about, admin, health, inference, metrics, monitoring, repository, v2
from service.batching import MicroBatcher
from service.body_drain import register_body_drain
from service.config import load_config
from service.errors import ApiError, register_error_handlers
from service.metrics import ServiceMetrics
from service.model_holder import ReloadFailed
from service.redaction import install_log_redaction
from service.request_id import current_request_id, register_request_ids
from service.state import EXTENSION_KEY, ServiceState
from service.stream import build_streams, load_first_models


def build_app(config: dict[str, Any] | None = None) -> Flask:
    install_log_redaction(current_request_id)  # before the first load: its failure may quote a tracking URL
    settings = load_config(config)
    if settings.source_uri is None and not settings.models:
        raise ValueError("no model to serve: set model_uri or registered_model (or CONTINUAL_MODEL_URI), or models "
                         "(CONTINUAL_MODELS, --model NAME=URI)")
    if settings.compute_threads == 0:  # plain `gunicorn -c python:service.gunicorn_conf`: its worker count
        from service import gunicorn_conf

        settings = replace(settings, compute_threads=gunicorn_conf.compute_threads_per_worker(gunicorn_conf.workers))
    service_metrics = ServiceMetrics()
    streams = build_streams(settings, service_metrics)
    batcher = (MicroBatcher(settings.max_batch_size, settings.max_wait_ms / 1000, service_metrics.batch_size.observe)
               if settings.batching else None)
    state = ServiceState(settings, streams, service_metrics, batcher)
    for stream in streams.values():  # first: its thread imports the statistics while the model loads
        stream.monitor.start()
    try:
        load_first_models(streams, settings.poll_seconds)
    except ReloadFailed:
        state.close()
        raise
    for stream in streams.values():
        stream.holder.start_polling(settings.poll_seconds)

    app = Flask("service")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes  # werkzeug answers 413 beyond it
    app.json.sort_keys = False  # keep label order and response fields as built
    app.extensions[EXTENSION_KEY] = state
    register_request_ids(app)  # first: every other hook, and any refusal, may need the id
    register_error_handlers(app)
    register_body_drain(app)
    app.before_request(_uncompressed_bodies_only)
    app.after_request(_options_as_json)
    for module in (inference, v2, repository, health, admin, metrics, monitoring, about):
        app.register_blueprint(module.blueprint)
    return app


def _uncompressed_bodies_only() -> None:
    """415 for a request whose body is sent compressed (Content-Encoding: gzip, deflate, br, ...): bodies are
    read as sent, and a compressed one would fail later as "not valid JSON" (400), hiding the cause. RFC 7694:
    the answer names the codings the server reads (Accept-Encoding). A route that does not exist stays a 404."""
    codings = [c.strip().lower() for c in request.headers.get("Content-Encoding", "").split(",") if c.strip()]
    unsupported = [c for c in codings if c != "identity"]
    if unsupported and request.url_rule is not None:
        raise ApiError(415, f"Content-Encoding {', '.join(unsupported)} is not supported: send the body "
                       "uncompressed", headers={"Accept-Encoding": "identity"})


def _options_as_json(response):
    """Flask answers OPTIONS itself with an empty body; every answer of this service is JSON."""
    if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
        response.set_data(json.dumps({"allow": sorted(response.allow)}))
        response.content_type = "application/json"
    return response


def shutdown(app: Flask) -> None:
    """Stop the app's poll and batcher threads (tests; a server process just exits)."""
    app.extensions[EXTENSION_KEY].close()
