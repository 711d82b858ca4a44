"""POST /v2/repository/index: Triton's model repository index of every served model (the extension's load and unload
are not served, and GET /v2 does not list it: see service.api.v2).

Each entry is ``{"name", "version", "state": "READY" | "UNAVAILABLE", "reason"}``: READY while the stream has a model
(``reason`` says if the alias moved to a version that failed to load), UNAVAILABLE while it has none (``reason``:
why its load failed). The body may be empty or ``{"ready": true}`` for the ready models only, as in Triton.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from service.errors import ApiError
from service.inputs import parse_json_object
from service.state import service_state

blueprint = Blueprint("repository", __name__, url_prefix="/v2/repository")


@blueprint.post("/index")
def index():
    body = request.get_data()
    ready_only = False
    if body.strip():
        payload = parse_json_object(body, required=[], allowed=["ready"])
        ready_only = payload.get("ready", False)
        if not isinstance(ready_only, bool):
            raise ApiError(422, "ready must be true or false")
    entries = [stream.index_entry() for stream in service_state().streams.values()]
    return jsonify([entry for entry in entries if entry["state"] == "READY" or not ready_only])
