"""What one app owns: its config, model holder, batcher and metrics; and the one way to classify."""
from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from flask import current_app

from service.batching import MicroBatcher, predict_unbatched
from service.backends import Prediction, ServedModel
from service.config import ServiceConfig
from service.errors import ApiError
from service.inputs import TextLimits
from service.metrics import ServiceMetrics
from service.model_holder import ModelHolder
from service.monitoring.monitor import Monitor

EXTENSION_KEY = "continual"


@dataclass
class ServiceState:
    config: ServiceConfig
    holder: ModelHolder
    metrics: ServiceMetrics
    batcher: MicroBatcher | None
    monitor: Monitor

    @property
    def limits(self) -> TextLimits:
        return TextLimits(self.config.max_texts, self.config.max_text_chars)

    @property
    def model_name(self) -> str:
        """The name on /v2/models/{name}: configured, else the registered model's, else "classifier"."""
        if self.config.model_name:
            return self.config.model_name
        model = self.holder.current
        return (model.card.name if model else None) or self.config.registered_model or "classifier"

    def serving_model(self) -> ServedModel:
        """The model this request will use from start to end (read once: a swap may happen meanwhile)."""
        model = self.holder.current
        if model is None:
            raise ApiError(503, "no model is loaded yet", {"Retry-After": "5"})
        return model

    def classify(self, model: ServedModel, texts: list[str]) -> list[Prediction]:
        self.metrics.texts.inc(len(texts))
        if self.batcher is None:
            predictions = predict_unbatched(model, texts, self.config.max_batch_size, self.metrics.batch_size.observe)
        else:
            future = self.batcher.submit(model, texts)
            try:
                predictions = future.result(timeout=self.config.request_timeout_s)
            except FutureTimeout:
                future.cancel()
                raise ApiError(503, "the model is overloaded; try again", {"Retry-After": "1"}) from None
        self.monitor.observe(model, texts, predictions)
        return predictions

    def close(self) -> None:
        self.monitor.close()
        self.holder.close()
        if self.batcher is not None:
            self.batcher.close()


def service_state() -> ServiceState:
    return current_app.extensions[EXTENSION_KEY]
