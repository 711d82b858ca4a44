"""GET /monitoring: the drift monitor's view (model, reference, window, latest scores, history, lineage, counters)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from service.state import service_state

blueprint = Blueprint("monitoring", __name__)


@blueprint.get("/monitoring")
def monitoring():
    return jsonify(service_state().monitor.snapshot())
