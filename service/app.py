"""Builds the app: config, metrics, the model holder (first load), the batcher, blueprints."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Flask, request

from service.api import about, admin, health, inference, metrics, monitoring, v2
from service.batching import MicroBatcher
from service.body_drain import register_body_drain
from service.config import ServiceConfig, load_config
from service.errors import register_error_handlers
from service.metrics import ServiceMetrics
from service.model_holder import ModelHolder, ReloadFailed
from service.model_source import source_for
from service.monitoring.capture import CaptureWriter
from service.monitoring.monitor import Monitor, MonitorSettings
from service.state import EXTENSION_KEY, ServiceState

log = logging.getLogger(__name__)


def build_app(config: dict[str, Any] | None = None) -> Flask:
    settings = load_config(config)
    if settings.source_uri is None:
        raise ValueError("no model to serve: set model_uri or registered_model (or CONTINUAL_MODEL_URI)")
    if settings.compute_threads == 0:  # plain `gunicorn -c python:service.gunicorn_conf`: its worker count
        from service import gunicorn_conf

        settings = replace(settings, compute_threads=gunicorn_conf.compute_threads_per_worker(gunicorn_conf.workers))
    service_metrics = ServiceMetrics()
    source = source_for(settings.source_uri, settings.tracking_uri, settings.registry_uri)
    holder = ModelHolder(source, settings.max_length, service_metrics, settings.backend, settings.max_quantized_drop,
                         settings.compute_threads)
    batcher = (MicroBatcher(settings.max_batch_size, settings.max_wait_ms / 1000, service_metrics.batch_size.observe)
               if settings.batching else None)
    state = ServiceState(settings, holder, service_metrics, batcher, None)
    state.monitor = build_monitor(settings, service_metrics, lambda: holder.current, lambda: state.model_name)
    _load_first_model(state)
    holder.start_polling(settings.poll_seconds)
    state.monitor.start()

    app = Flask("service")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes  # werkzeug answers 413 beyond it
    app.json.sort_keys = False  # keep label order and response fields as built
    app.extensions[EXTENSION_KEY] = state
    register_error_handlers(app)
    register_body_drain(app)
    app.after_request(_options_as_json)
    for module in (inference, v2, health, admin, metrics, monitoring, about):
        app.register_blueprint(module.blueprint)
    return app


def build_monitor(settings: ServiceConfig, service_metrics: ServiceMetrics, served, model_name) -> Monitor:
    capture = None
    if settings.monitoring and settings.capture_rate > 0:
        capture = CaptureWriter(Path(settings.capture_dir), settings.capture_max_rows, service_metrics.captured.inc,
                                lambda reason, n=1: service_metrics.capture_dropped.labels(reason).inc(n))
    monitor_settings = MonitorSettings(settings.monitoring, settings.monitoring_window, settings.monitoring_interval_s,
                                       settings.monitoring_min_texts, settings.drift_thresholds, settings.capture_rate)
    return Monitor(monitor_settings, service_metrics, served, model_name, capture)


def _options_as_json(response):
    """Flask answers OPTIONS itself with an empty body; every answer of this service is JSON."""
    if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
        response.set_data(json.dumps({"allow": sorted(response.allow)}))
        response.content_type = "application/json"
    return response


def shutdown(app: Flask) -> None:
    """Stop the app's poll and batcher threads (tests; a server process just exits)."""
    app.extensions[EXTENSION_KEY].close()


def _load_first_model(state: ServiceState) -> None:
    try:
        state.holder.refresh()
    except ReloadFailed:
        if state.config.poll_seconds <= 0:
            state.close()
            raise  # nothing would ever retry: fail at start rather than run never ready
        log.warning("starting without a model (not ready); the registry poll retries every %s s",
                    state.config.poll_seconds)
