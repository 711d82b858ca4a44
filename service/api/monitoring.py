"""GET /monitoring[?model=NAME]: one model's drift monitor (model, reference, window, latest scores, history, lineage,
counters); the first model without ``model``. ``model_name`` is its name, ``models`` every served model's."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from service.state import ServiceState, service_state
from service.stream import Stream

blueprint = Blueprint("monitoring", __name__)


def selected_stream(state: ServiceState) -> Stream:
    """The stream ``?model=NAME`` names (404 for another name), else the default one."""
    name = request.args.get("model")
    return state.default if name is None else state.stream(name)


def monitoring_snapshot(state: ServiceState) -> dict:
    stream = selected_stream(state)
    return {**stream.monitor.snapshot(), "model_name": stream.name, "models": list(state.streams)}


@blueprint.get("/monitoring")
def monitoring():
    return jsonify(monitoring_snapshot(service_state()))
