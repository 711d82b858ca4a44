"""The drift monitor: a bounded window of recent traffic, compared with the champion's reference off the request path.

``observe`` runs on the request path and only copies a few numbers per text into fixed-size ring buffers under a
short lock (and offers sampled texts to the capture writer's queue). A daemon thread wakes every ``interval_s``,
copies the window, scores it (``service.monitoring.scores``), sets the Prometheus gauges and keeps a bounded history
for the status page. A new champion starts a new window: its reference and its encoder differ. Raw texts never reach
metrics or logs. Under gunicorn the workers' windows are scored together by one of them
(``service.monitoring.shared_window``), so every worker shows the same, whole-server view.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter as Tally, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from service.backends import Prediction, ServedModel
from service.metrics import ServiceMetrics
from service.monitoring.capture import capture_record
from service.monitoring.scores import CHECKS, drift_scores, prepare
from service.monitoring.shared_window import SharedWindows, Window, shared_folder

log = logging.getLogger(__name__)
HISTORY = 240  # checks kept for the status page: two hours at the default 30 s


@dataclass(frozen=True)
class MonitorSettings:
    enabled: bool = True
    window: int = 500
    interval_s: float = 30.0
    min_texts: int = 100
    thresholds: dict[str, float] | None = None  # check -> threshold; drift when the score is above it
    capture_rate: float = 0.0


class Monitor:
    def __init__(self, settings: MonitorSettings, metrics: ServiceMetrics, served: Callable[[], ServedModel | None],
                 model_name: str, capture=None, seed: int | None = None):
        self.settings = settings
        self.metrics = metrics
        self.served = served          # the model serving now (the holder's), for the snapshot
        self.model_name = model_name  # the stream's name on /v2/models/{name}, on every series
        self.capture = capture  # service.monitoring.capture.CaptureWriter when capture_rate > 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._model: ServedModel | None = None
        self._embeddings: np.ndarray | None = None
        size = settings.window
        self._predicted, self._confidence = np.zeros(size, np.int64), np.zeros(size, np.float32)
        self._lengths, self._position, self._count = np.zeros(size, np.int64), 0, 0
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        folder = shared_folder() if settings.enabled else None
        self.shared = SharedWindows(folder, model_name) if folder is not None else None
        self._history_of: str | None = None  # the model the shared history is about

    # -- the request path -----------------------------------------------------------------------------
    def observe(self, model: ServedModel, texts: list[str], predictions: list[Prediction],
                capture: bool = False) -> None:
        """Count ``predictions`` into the window; ``capture``: the request may be sampled for capture (it carries
        the admin token, or capture_anonymous is on)."""
        if not self.settings.enabled or not predictions:
            return
        labels = {label: i for i, label in enumerate(model.labels)}
        confidences = [max(p.probabilities) for p in predictions]
        with self._lock:
            if model is not self._model:
                self._start_window(model, predictions[0].embedding)
            for text, prediction, confidence in zip(texts, predictions, confidences):
                at = self._position
                self._predicted[at], self._confidence[at], self._lengths[at] = labels[prediction.label], confidence, len(text)
                if self._embeddings is not None and prediction.embedding is not None:
                    self._embeddings[at] = prediction.embedding
                self._position = (at + 1) % self.settings.window
                self._count = min(self._count + 1, self.settings.window)
        name, version = self.model_name, model.card.version or ""
        for label, count in Tally(p.label for p in predictions).items():
            self.metrics.predictions.labels(name, version, label).inc(count)
        histogram = self.metrics.confidence.labels(name, version)
        for confidence in confidences:
            histogram.observe(confidence)
        if capture and self.capture is not None and self.settings.capture_rate > 0:
            self._offer_captures(model, texts, predictions, confidences)

    def _start_window(self, model: ServedModel, embedding) -> None:
        previous, self._model = self._model, model
        self._count = self._position = 0
        width = None if embedding is None else len(embedding)
        self._embeddings = None if width is None else np.zeros((self.settings.window, width), np.float16)
        if previous is not None:  # the old champion's series stop saying "drift"
            self._clear_gauges(previous)

    def _offer_captures(self, model: ServedModel, texts, predictions, confidences) -> None:
        rate, now = self.settings.capture_rate, datetime.now(timezone.utc)
        records = [capture_record(text, p.label, c, model.card.version, model.card.round_key, now, self.model_name)
                   for text, p, c in zip(texts, predictions, confidences) if self._random.random() < rate]
        if records:
            self.capture.offer(records)

    # -- the background check -------------------------------------------------------------------------
    def start(self) -> None:
        if self.settings.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-monitor", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        prepare()  # scikit-learn's import holds the GIL for a second: pay it at start, not amid traffic
        while not self._stop.wait(self.settings.interval_s):
            try:
                self.tick()
            except Exception:  # a failed check must never stop the next one, nor the server
                self.metrics.drift_failures.inc()
                log.exception("drift check failed")

    def tick(self) -> dict[str, Any] | None:
        """One interval: alone, score this worker's window; under gunicorn, publish it, and score the union of
        every worker's if this worker leads."""
        if self.shared is None:
            return self.check()
        self._publish()
        return self._check_shared() if self.shared.lead() else None

    def _window(self) -> tuple[ServedModel | None, Window]:
        """The model the window is about and a copy of the window (the request path keeps writing to it)."""
        with self._lock:
            count = self._count
            return self._model, Window(self._predicted[:count].copy(), self._confidence[:count].copy(),
                                       self._lengths[:count].copy(),
                                       None if self._embeddings is None else self._embeddings[:count].copy())

    def _publish(self) -> None:
        model, window = self._window()
        if model is not None:
            self.shared.publish(_model_key(model), window)

    def _check_shared(self) -> dict[str, Any] | None:
        model = self.served()
        if model is None:
            return None
        key = _model_key(model)
        if key != self._history_of:
            self.history.clear()
            self._history_of = key
        window, workers = self.shared.gather(key)
        if window is None or len(window.predicted) < self.settings.min_texts:
            return None
        result = self._score(model, window, workers)
        self.history.append(result)
        self.shared.write_history(list(self.history))
        return result

    def check(self) -> dict[str, Any] | None:
        """Score this worker's window now; None while it holds fewer than ``min_texts`` texts."""
        model, window = self._window()
        if model is None or len(window.predicted) < self.settings.min_texts:
            return None
        if window.embeddings is not None:
            window = window._replace(embeddings=window.embeddings.astype(np.float32))
        result = self._score(model, window, 1)
        if model is self._model:  # a swap during the check started a new window: this result is about the old one
            self.history.append(result)
        return result

    def _score(self, model: ServedModel, window: Window, workers: int) -> dict[str, Any]:
        """Score ``window`` against ``model``'s reference and set the gauges."""
        predicted, confidence, lengths, embeddings = window
        count = len(predicted)
        reference = getattr(model, "reference", None)
        if reference is not None and reference.labels != model.labels:
            reference = None  # not this head's reference: no check can be trusted
        scores = drift_scores(reference, embeddings, predicted, confidence, lengths, model.backend.name)
        thresholds = self.thresholds
        result = {"time": time.time(), "texts": count, "workers": workers, "model_version": model.card.version,
                  "scores": scores, "drift": {c: scores[c] is not None and scores[c] > thresholds[c] for c in CHECKS}}
        name, version = self.model_name, model.card.version or ""
        for check in CHECKS:
            value = scores[check]
            self.metrics.drift_score.labels(name, version, check).set(float("nan") if value is None else value)
            self.metrics.drift_detected.labels(name, version, check).set(1 if result["drift"][check] else 0)
        self.metrics.drift_window.labels(name, version).set(count)
        self.metrics.drift_checked.labels(name, version).set(result["time"])
        return result

    def _clear_gauges(self, model: ServedModel) -> None:
        name, version = self.model_name, model.card.version or ""
        for check in CHECKS:
            self.metrics.drift_score.labels(name, version, check).set(float("nan"))
            self.metrics.drift_detected.labels(name, version, check).set(0)
        self.history.clear()

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.settings.thresholds or {})

    # -- what /monitoring and the status page show ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What GET /monitoring answers and the status page draws: the whole server's view (``workers``: how many
        workers' windows it covers; under gunicorn the windows are those published at the last interval)."""
        model = self.served()
        reference = getattr(model, "reference", None)
        card = model.card.as_json() if model is not None else {}
        if self.shared is not None and model is not None:
            key = _model_key(model)
            window, workers = self.shared.texts(key)
            history = [h for h in self.shared.read_history() if h.get("model_version") == model.card.version]
        else:
            with self._lock:
                window = self._count if model is self._model else 0
                history = list(self.history) if model is self._model else []
            workers = 1
        return {
            "model": None if model is None else {"name": self.model_name,
                                                  **{k: card[k] for k in ("version", "round", "round_key", "arrival")},
                                                  "backend": model.backend.name},
            "monitoring": self.settings.enabled,
            "reference": None if reference is None else {
                "rows": int(len(reference.embeddings)), "labels": reference.labels,
                "label_share": dict(zip(reference.labels, (reference.train_label_counts
                                                          / max(reference.train_label_counts.sum(), 1)).tolist()))},
            "window": {"texts": window, "capacity": self.settings.window * max(workers, 1), "workers": workers},
            "interval_s": self.settings.interval_s,
            "thresholds": self.thresholds,
            "latest": history[-1] if history else None,
            "history": history,
            "lineage": None if reference is None else reference.lineage(),
            "counters": self._counters(),
            "capture": {"enabled": self.capture is not None and self.settings.capture_rate > 0,
                        "rate": self.settings.capture_rate},
        }

    def _counters(self) -> dict[str, Any]:
        def total(metric, suffix: str = "_total") -> dict[tuple, float]:
            return {tuple(sample.labels.values()): sample.value for family in metric.collect()
                    for sample in family.samples if sample.name.endswith(suffix)}

        predictions: dict[str, int] = {}
        name = self.model_name
        for (model_name, _, label), value in total(self.metrics.predictions).items():
            if model_name == name:  # this model's; requests, texts and errors are the whole server's
                predictions[label] = predictions.get(label, 0) + int(value)
        return {"requests": int(sum(total(self.metrics.requests).values())),
                "texts": int(sum(total(self.metrics.texts).values())),
                "errors": int(sum(total(self.metrics.errors).values())), "predictions": predictions,
                "captured": int(sum(total(self.metrics.captured).values())),
                "capture_dropped": int(sum(total(self.metrics.capture_dropped).values()))}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.shared is not None:
            self.shared.close()
        if self.capture is not None:
            self.capture.close()


def _model_key(model: ServedModel) -> str:
    """Which model a window is about, the same in every worker: its registry version and round key."""
    card = model.card
    return f"{card.version}|{card.round_key}"
