"""POST /admin/reload: swap in the model the alias points at now. Needs the admin bearer token."""
from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, jsonify, request

from service.errors import ApiError
from service.model_holder import ReloadFailed
from service.state import service_state
from service.stream import Stream

blueprint = Blueprint("admin", __name__, url_prefix="/admin")


@blueprint.before_request
def require_admin_token():
    token = service_state().config.admin_token
    if not token:
        raise ApiError(403, "admin endpoints are off: no admin token is configured")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "a valid admin bearer token is required", {"WWW-Authenticate": 'Bearer realm="admin"'})


@blueprint.post("/reload")
def reload():
    """Loads beside the served model and swaps; ``?force=true`` reloads even an unchanged model. ``?model=NAME``
    reloads one model; without it a server of several reloads each and answers ``{"models": {NAME: ...}}``."""
    force = request.args.get("force", "false")
    if force not in ("true", "false"):
        raise ApiError(422, "force must be true or false")
    state = service_state()
    name = request.args.get("model")
    if name is not None or not state.several:
        body, status = _reload(state.stream(name) if name is not None else state.default, force == "true")
        return jsonify(body), status
    outcomes = {stream.name: _reload(stream, force == "true") for stream in state.streams.values()}
    status = max(status for _, status in outcomes.values())
    return jsonify(models={name: body for name, (body, _) in outcomes.items()}), status


def _reload(stream: Stream, force: bool) -> tuple[dict[str, Any], int]:
    holder = stream.holder
    try:
        outcome = holder.refresh(force=force)
    except ReloadFailed as error:
        # 502: what the registry or artifact store handed us could not be loaded; nothing changed here.
        serving = holder.current.card.as_json() if holder.current else None
        return {"error": f"reload failed, still serving the previous model: {error}", "serving": serving}, 502
    return {"swapped": outcome.swapped, "previous": outcome.previous.as_json() if outcome.previous else None,
            "current": outcome.current.as_json() if outcome.current else None}, 200
