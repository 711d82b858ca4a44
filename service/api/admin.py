"""The operator's API, behind the admin bearer token: POST /admin/reload swaps in the model the alias points at now;
GET /admin/models says where each model comes from and why its last load failed, in full (credentials removed):
the detail public answers leave out."""
from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, jsonify, request

from service.errors import ApiError
from service.model_holder import ReloadFailed
from service.redaction import redact
from service.state import service_state
from service.stream import Stream

blueprint = Blueprint("admin", __name__, url_prefix="/admin")


def has_admin_token() -> bool:
    """Whether this request carries the configured admin bearer token."""
    token = service_state().config.admin_token
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def may_capture() -> bool:
    """Whether this request's texts may be sampled for capture: anonymous traffic only with capture_anonymous, so
    that it cannot fill (or poison) the pool labelling draws from."""
    return service_state().config.capture_anonymous or has_admin_token()


@blueprint.before_request
def require_admin_token():
    if not service_state().config.admin_token:
        raise ApiError(403, "admin endpoints are off: no admin token is configured")
    if not has_admin_token():
        raise ApiError(401, "a valid admin bearer token is required", {"WWW-Authenticate": 'Bearer realm="admin"'})


@blueprint.get("/models")
def models():
    """Every served model as this worker holds it: source, location, serving card, and its last failure in full."""
    state = service_state()
    config = state.config
    return jsonify(
        tracking_uri=redact(config.tracking_uri) if config.tracking_uri else None,
        registry_uri=redact(config.registry_uri) if config.registry_uri else None,
        models=[_status(stream) for stream in state.streams.values()])


def _status(stream: Stream) -> dict[str, Any]:
    holder, model = stream.holder, stream.holder.current
    return {"name": stream.name, "location": redact(holder.source.uri), "ready": model is not None,
            "serving": model.card.as_json(private=True) if model else None,
            "backend": {"name": model.backend.name, "reason": model.backend.reason} if model else None,
            "stale": holder.stale, "awaiting_registration": holder.awaiting_registration,
            "last_error": holder.last_error, "error_id": holder.error_id, "failed_at": holder.failed_at}


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
        serving = holder.current.card.as_json(private=True) if holder.current else None
        return {"error": f"reload failed, still serving the previous model: {error}", "serving": serving,
                "error_id": holder.error_id}, 502
    return {"swapped": outcome.swapped,
            "previous": outcome.previous.as_json(private=True) if outcome.previous else None,
            "current": outcome.current.as_json(private=True) if outcome.current else None}, 200
