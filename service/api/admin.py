"""POST /admin/reload: swap in the model the alias points at now. Needs the admin bearer token."""
from __future__ import annotations

import hmac

from flask import Blueprint, jsonify, request

from service.errors import ApiError
from service.model_holder import ReloadFailed
from service.state import service_state

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
    """Loads beside the served model and swaps; ``?force=true`` reloads even an unchanged model."""
    force = request.args.get("force", "false")
    if force not in ("true", "false"):
        raise ApiError(422, "force must be true or false")
    holder = service_state().holder
    try:
        outcome = holder.refresh(force=force == "true")
    except ReloadFailed as error:
        # 502: what the registry or artifact store handed us could not be loaded; nothing changed here.
        serving = holder.current.card.as_json() if holder.current else None
        return jsonify(error=f"reload failed, still serving the previous model: {error}", serving=serving), 502
    return jsonify(
        swapped=outcome.swapped,
        previous=outcome.previous.as_json() if outcome.previous else None,
        current=outcome.current.as_json() if outcome.current else None,
    )
