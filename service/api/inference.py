"""POST /predict: the service's own JSON API."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from service.inputs import parse_json_object, validated_texts
from service.state import service_state

blueprint = Blueprint("inference", __name__)


@blueprint.post("/predict")
def predict():
    state = service_state()
    payload = parse_json_object(request.get_data(), required=["texts"], allowed=["texts"])
    texts = validated_texts(payload["texts"], state.limits)
    model = state.serving_model()
    predictions = state.classify(model, texts)
    return jsonify(
        model=model.card.as_json(),
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
