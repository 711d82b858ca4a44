"""What one app owns: its config, its streams (one per served model), the batcher and metrics; and the one way to
classify."""
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
from service.stream import Stream

EXTENSION_KEY = "continual"


@dataclass
class ServiceState:
    config: ServiceConfig
    streams: dict[str, Stream]  # V2 model name -> stream, in the configured order; the first is the default
    metrics: ServiceMetrics
    batcher: MicroBatcher | None  # one per worker, shared by the streams: a batch holds one model's texts

    @property
    def limits(self) -> TextLimits:
        return TextLimits(self.config.max_texts, self.config.max_text_chars)

    @property
    def default(self) -> Stream:
        """The one model of a single-model server; the first of several (status page, GET /)."""
        return next(iter(self.streams.values()))

    @property
    def several(self) -> bool:
        return len(self.streams) > 1

    # The default stream's parts, as the app had them when it served one model (continual.reports.drift uses them).
    @property
    def holder(self) -> ModelHolder:
        return self.default.holder

    @property
    def monitor(self) -> Monitor:
        return self.default.monitor

    @property
    def model_name(self) -> str:
        return self.default.name

    def stream(self, name: str) -> Stream:
        found = self.streams.get(name)
        if found is None:
            served = ", ".join(repr(n) for n in self.streams)
            raise ApiError(404, f"unknown model {name!r}; this server serves {served}")
        return found

    def serving_model(self) -> ServedModel:
        return self.default.serving_model()

    def classify(self, model: ServedModel, texts: list[str], stream: Stream | None = None,
                 capture: bool = False) -> list[Prediction]:
        """Predictions of ``model`` (read once from ``stream``, the default one if None) on ``texts``; ``capture``:
        the texts may be sampled for capture (service.api.admin.may_capture)."""
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
        (stream or self.default).monitor.observe(model, texts, predictions, capture)
        return predictions

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()
        if self.batcher is not None:
            self.batcher.close()


def service_state() -> ServiceState:
    return current_app.extensions[EXTENSION_KEY]
