"""GET /metrics, and the per-request counting that feeds it."""
from __future__ import annotations

import time

from flask import Blueprint, Response, g, request

from service.state import service_state

blueprint = Blueprint("metrics", __name__)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@blueprint.before_app_request
def start_timer():
    g.request_started = time.perf_counter()


@blueprint.after_app_request
def count_request(response: Response) -> Response:
    metrics = service_state().metrics
    # The rule, not the path: /v2/models/{name} stays one series whatever names clients try.
    route = request.url_rule.rule if request.url_rule else "<unmatched>"
    method = request.method if request.method in KNOWN_METHODS else "OTHER"  # clients may invent methods
    status = str(response.status_code)
    metrics.requests.labels(method, route, status).inc()
    if "request_started" in g:
        metrics.latency.labels(method, route).observe(time.perf_counter() - g.request_started)
    if response.status_code >= 400:
        metrics.errors.labels(route, status).inc()
    return response


@blueprint.get("/metrics")
def metrics():
    body, content_type = service_state().metrics.exposition()
    return Response(body, content_type=content_type)
