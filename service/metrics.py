"""Prometheus metrics of one app, and their exposition (single process or gunicorn multiprocess).

Each app gets its own registry so that tests can build many apps in one process. Under gunicorn with
several workers, set PROMETHEUS_MULTIPROC_DIR (an empty folder) before start: prometheus_client then
writes every worker's values to files there and /metrics merges them, whichever worker answers.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

from service.model_source import ModelCard

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
MODEL_LABELS = ("model_name", "model_version")  # on every monitoring series: which champion it is about


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("continual_http_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("continual_http_request_duration_seconds", "Time to answer a request, by route",
                                 ["method", "route"], registry=registry)
        self.errors = Counter("continual_http_errors", "Responses with status >= 400, by route and status",
                              ["route", "status"], registry=registry)
        self.batch_size = Histogram("continual_batch_size", "Texts in one forward pass",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.texts = Counter("continual_texts_classified", "Texts classified", registry=registry)
        # Per served model (model_name: its V2 name, one per stream). liveall: one series per live worker, so a
        # worker still on the old model shows up as such.
        self.model_version = Gauge("continual_model_version", "Registry version of the served model (-1: none)",
                                   ["model_name"], registry=registry, multiprocess_mode="liveall")
        self.model_info = Gauge("continual_model_info", "1 for the served model, 0 for models served before",
                                ["model_name", "name", "version", "round", "round_key"], registry=registry,
                                multiprocess_mode="liveall")
        self.backend = Gauge("continual_model_backend", "1 for the backend serving now (torch, onnx, onnx-int8)",
                             ["model_name", "backend"], registry=registry, multiprocess_mode="liveall")
        self.reloads = Counter("continual_model_reloads", "Models loaded and swapped in", ["model_name"],
                               registry=registry)
        self.reload_failures = Counter("continual_model_reload_failures",
                                       "Model loads or registry lookups that failed (the old model kept serving)",
                                       ["model_name"], registry=registry)
        self.model_stale = Gauge("continual_model_stale",
                                 "1 while the registry alias points at a version this server could not load",
                                 ["model_name"], registry=registry, multiprocess_mode="liveall")
        # Monitoring (service.monitoring): what the served model predicts, and how far traffic drifted.
        self.predictions = Counter("continual_predictions", "Texts classified, by predicted label",
                                   [*MODEL_LABELS, "label"], registry=registry)
        self.confidence = Histogram("continual_prediction_confidence", "Largest softmax probability of each text",
                                    MODEL_LABELS, buckets=CONFIDENCE_BUCKETS, registry=registry)
        self.drift_score = Gauge("continual_drift_score",
                                 "Drift of the recent window against the champion's reference, by check "
                                 "(embedding_auc, label_psi, length_psi, confidence_drop)",
                                 [*MODEL_LABELS, "check"], registry=registry, multiprocess_mode="liveall")
        self.drift_detected = Gauge("continual_drift_detected", "1 when a check's score is past its threshold",
                                    [*MODEL_LABELS, "check"], registry=registry, multiprocess_mode="liveall")
        self.drift_window = Gauge("continual_drift_window_texts", "Texts in the window the last check compared",
                                  MODEL_LABELS, registry=registry, multiprocess_mode="liveall")
        self.drift_checked = Gauge("continual_drift_last_check_timestamp_seconds",
                                   "Unix time of the last drift check", MODEL_LABELS, registry=registry,
                                   multiprocess_mode="liveall")
        self.drift_failures = Counter("continual_drift_check_failures", "Drift checks that raised (logged)",
                                      registry=registry)
        self.captured = Counter("continual_capture_rows", "Served texts written to the capture file",
                                registry=registry)
        self.capture_dropped = Counter("continual_capture_dropped", "Sampled texts not captured, by reason "
                                       "(disk: the write failed, e.g. a full disk; queue: the writer fell behind; "
                                       "too_large: one row over capture_max_bytes; invalid; closed)",
                                       ["reason"], registry=registry)

    def add_model(self, name: str) -> None:
        """A served model's series exist from the start: no version (-1), not stale, no reload yet."""
        self.model_version.labels(name).set(-1)
        self.model_stale.labels(name).set(0)
        self.reloads.labels(name)
        self.reload_failures.labels(name)

    def model_swapped(self, name: str, new: ModelCard, old: ModelCard | None) -> None:
        if old is not None:
            self.model_info.labels(name, *_info_labels(old)).set(0)
        self.model_info.labels(name, *_info_labels(new)).set(1)
        self.model_version.labels(name).set(float(new.version) if new.version and new.version.isdigit() else -1)
        self.reloads.labels(name).inc()

    def backend_swapped(self, name: str, new: str, old: str | None) -> None:
        if old is not None and old != new:
            self.backend.labels(name, old).set(0)
        self.backend.labels(name, new).set(1)

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_mode():
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _info_labels(card: ModelCard) -> tuple[str, str, str, str]:
    return card.name or "", card.version or "", card.round or "", card.round_key or ""
