"""Open Inference Protocol health: live as soon as the process answers, ready once a model is loaded."""
from __future__ import annotations

from flask import Blueprint, jsonify

from service.state import service_state

blueprint = Blueprint("health", __name__)


@blueprint.get("/v2/health/live")
def live():
    return jsonify(live=True)


@blueprint.get("/v2/health/ready")
def ready():
    is_ready = service_state().holder.current is not None
    return jsonify(ready=is_ready), 200 if is_ready else 503
