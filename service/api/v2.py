"""Open Inference Protocol (KServe V2) metadata and inference routes; health lives in health.py."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from service import __version__
from service.backends import ServedModel
from service.errors import ApiError
from service.open_inference import infer_response, model_metadata, parse_infer_request
from service.state import service_state

blueprint = Blueprint("v2", __name__, url_prefix="/v2")


def _model(name: str, version: str | None) -> ServedModel:
    state = service_state()
    if name != state.model_name:
        raise ApiError(404, f"unknown model {name!r}; this server serves {state.model_name!r}")
    model = state.serving_model()
    if version is not None and version != model.card.version:
        raise ApiError(404, f"model {name!r} has no loaded version {version!r}; loaded: {model.card.version!r}")
    return model


@blueprint.get("")
def server_metadata():
    return jsonify(name="continual", version=__version__, extensions=["binary_tensor_data"])


@blueprint.get("/models/<name>", defaults={"version": None})
@blueprint.get("/models/<name>/versions/<version>")
def metadata(name: str, version: str | None):
    return jsonify(model_metadata(name, _model(name, version)))


@blueprint.get("/models/<name>/ready", defaults={"version": None})
@blueprint.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None):
    _model(name, version)  # 404 for another model or version, 503 while none is loaded
    return jsonify(name=name, ready=True)


@blueprint.post("/models/<name>/infer", defaults={"version": None})
@blueprint.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None):
    state = service_state()
    model = _model(name, version)
    parsed = parse_infer_request(request.get_data(), request.headers.get("Inference-Header-Content-Length"),
                                 state.limits)
    return jsonify(infer_response(name, model, parsed, state.classify(model, parsed.texts)))
