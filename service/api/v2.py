"""Open Inference Protocol (KServe V2) metadata and inference routes, one model name per stream; health lives in
health.py, the repository index in repository.py."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from service.api.admin import may_capture
from service.backends import ServedModel
from service.errors import ApiError
from service.open_inference import infer_response, model_metadata, parse_infer_request
from service.state import service_state
from service.stream import Stream
from service.version import __version__

blueprint = Blueprint("v2", __name__, url_prefix="/v2")
# Only what is served in full. Triton's model_repository extension is load, unload and the index: the index is served
# (service.api.repository), load and unload are not (the registry alias decides what is served, and /admin/reload
# follows it; an unload would fight the alias's poll), so the extension is not listed.
EXTENSIONS = ["binary_tensor_data"]


def _model(name: str, version: str | None) -> tuple[Stream, ServedModel]:
    stream = service_state().stream(name)  # 404 for a name no stream has
    model = stream.serving_model()         # 503 while this stream has no model
    if version is not None and version != model.card.version:
        raise ApiError(404, f"model {name!r} has no loaded version {version!r}; loaded: {model.card.version!r}")
    return stream, model


@blueprint.get("")
def server_metadata():
    return jsonify(name="continual", version=__version__, extensions=EXTENSIONS)


@blueprint.get("/models/<name>", defaults={"version": None})
@blueprint.get("/models/<name>/versions/<version>")
def metadata(name: str, version: str | None):
    return jsonify(model_metadata(name, _model(name, version)[1]))


@blueprint.get("/models/<name>/ready", defaults={"version": None})
@blueprint.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None):
    _model(name, version)  # 404 for another model or version, 503 while none is loaded
    return jsonify(name=name, ready=True)


@blueprint.post("/models/<name>/infer", defaults={"version": None})
@blueprint.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None):
    state = service_state()
    stream, model = _model(name, version)
    parsed = parse_infer_request(request.get_data(), request.headers.get("Inference-Header-Content-Length"),
                                 state.limits)
    predictions = state.classify(model, parsed.texts, stream, capture=may_capture())
    return jsonify(infer_response(name, model, parsed, predictions))
