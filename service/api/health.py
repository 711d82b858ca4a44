"""Open Inference Protocol health: live as soon as the process answers, ready once a model is loaded.

With several models the server is ready while any of them is loaded: one model's failed load must not take the
others out of a load balancer. Each model's own readiness is GET /v2/models/{name}/ready (and the repository index).
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from service.state import service_state

blueprint = Blueprint("health", __name__)


@blueprint.get("/v2/health/live")
def live():
    return jsonify(live=True)


@blueprint.get("/v2/health/ready")
def ready():
    is_ready = any(stream.holder.current is not None for stream in service_state().streams.values())
    return jsonify(ready=is_ready), 200 if is_ready else 503
