"""POST /predict: the service's own JSON API.

``{"texts": [...]}`` is answered by the server's model. A server of several models needs ``"model": NAME`` as well
(422 without it, 404 for a name it does not serve; both name the models it serves); a single-model server accepts
its own name there too.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from service.api.admin import may_capture
from service.errors import ApiError
from service.inputs import parse_json_object, validated_texts
from service.state import ServiceState, service_state
from service.stream import Stream

blueprint = Blueprint("inference", __name__)


@blueprint.post("/predict")
def predict():
    state = service_state()
    payload = parse_json_object(request.get_data(), required=["texts"], allowed=["texts", "model"])
    stream = requested_stream(state, payload)
    texts = validated_texts(payload["texts"], state.limits)
    model = stream.serving_model()
    predictions = state.classify(model, texts, stream, capture=may_capture())
    return jsonify(
        model=model.card.as_json(),
        model_name=stream.name,
        labels=model.labels,
        predictions=[
            {
                "label": prediction.label,
                "probabilities": dict(zip(model.labels, prediction.probabilities)),
                "truncated": prediction.truncated,
            }
            for prediction in predictions
        ],
    )


def requested_stream(state: ServiceState, payload: dict[str, Any]) -> Stream:
    if "model" not in payload:
        if state.several:
            served = ", ".join(repr(n) for n in state.streams)
            raise ApiError(422, f"this server serves several models: name one in the field \"model\" ({served})")
        return state.default
    name = payload["model"]
    if not isinstance(name, str):
        raise ApiError(422, "model must be a string, the name of a served model")
    return state.stream(name)
