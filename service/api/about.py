"""GET / (what this service is and serves) and the OpenAPI document, with this app's limits in it."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from flask import Blueprint, Response, jsonify, request

from service.config import ServiceConfig
from service.api.monitoring import monitoring_snapshot, selected_stream
from service.monitoring.page import CONTENT_SECURITY_POLICY, render
from service.state import service_state

blueprint = Blueprint("about", __name__)


@blueprint.get("/")
def index():
    """JSON for programs; the status page for a browser (one that prefers text/html: */* keeps the JSON). With several
    models, ``?model=NAME`` picks the one the page and ``model`` describe (the first by default)."""
    state = service_state()
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        page = Response(render(monitoring_snapshot(state)), content_type="text/html; charset=utf-8")
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        page.vary.add("Accept")
        return page
    stream = selected_stream(state)
    model = stream.holder.current
    names = list(state.streams)
    answer = jsonify(
        service="continual model server",
        description="Text classification by the model the registry alias points at; hot-swapped when it moves.",
        model_name=stream.name,
        model=model.card.as_json() if model else None,
        labels=model.labels if model else [],
        ready=model is not None,
        models=[stream.index_entry() for stream in state.streams.values()],
        openapi="/openapi.json",
        endpoints=["/predict", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/repository/index",
                   *[f"/v2/models/{name}" for name in names], *[f"/v2/models/{name}/infer" for name in names],
                   "/metrics", "/monitoring", "/admin/reload", "/admin/models"],
    )
    answer.vary.add("Accept")
    return answer


@blueprint.get("/openapi.json")
def openapi_json():
    return jsonify(_served_document())


@blueprint.get("/openapi.yaml")
def openapi_yaml():
    text = yaml.safe_dump(_served_document(), sort_keys=False, allow_unicode=True)
    return Response(text, content_type="application/yaml")


def _served_document() -> dict[str, Any]:
    state = service_state()
    versions = {stream.holder.current.card.version for stream in state.streams.values() if stream.holder.current}
    return openapi_document(state.config, tuple(state.streams), versions.pop() if len(versions) == 1 else None)


def openapi_document(config: ServiceConfig, model_names: tuple[str, ...], version: str | None) -> dict[str, Any]:
    """The shipped service/openapi.yaml made exact for this server: its size limits, and the model names that exist
    here and, when they all serve one version, that version (so a client or a fuzzer knows which are not 404)."""
    return json.loads(_document_text(config.max_texts, config.max_text_chars, config.max_body_bytes,
                                     model_names, version))


@lru_cache(maxsize=16)
def _document_text(max_texts: int, max_text_chars: int, max_body_bytes: int, model_names: tuple[str, ...],
                   version: str | None) -> str:
    document = yaml.safe_load(resources.files("service").joinpath("openapi.yaml").read_text())
    schemas = document["components"]["schemas"]
    schemas["Text"]["maxLength"] = max_text_chars
    schemas["TextList"]["maxItems"] = max_texts
    schemas["PredictRequest"]["properties"]["model"]["enum"] = list(model_names)
    document["info"]["x-max-body-bytes"] = max_body_bytes
    parameters = document["components"]["parameters"]
    parameters["ModelName"]["schema"]["enum"] = list(model_names)
    parameters["ModelQuery"]["schema"]["enum"] = list(model_names)
    if version is not None:
        parameters["ModelVersion"]["schema"]["enum"] = [version]
    return json.dumps(document)
